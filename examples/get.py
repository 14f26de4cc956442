# this program fetches a URL through condure's client mode, REQ interface, and prints the response
#
# condure must run with --zserver-req (e.g. condure --zserver-req ipc://server); condure makes the
# outgoing HTTP(S) request and answers with one message: code, reason, headers, body (or an error).
#
# usage: get.py URL        (CONDURE_ZSERVER: the --zserver-req spec, default ipc://server)
import os
import sys
import uuid

import tnetstring
import zmq

if len(sys.argv) != 2:
    sys.exit('usage: {} URL'.format(sys.argv[0]))

spec = os.environ.get('CONDURE_ZSERVER', 'ipc://server')
timeout = float(os.environ.get('CONDURE_TIMEOUT', '35'))  # condure's --req-timeout is 30 s

ctx = zmq.Context()
sock = ctx.socket(zmq.REQ)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(spec)

req = {
    b'id': str(uuid.uuid4()).encode(),
    b'method': b'GET',
    b'uri': sys.argv[1].encode(),
}
sock.send(b'T' + tnetstring.dumps(req))

# condure does not answer a request it cannot parse: do not wait forever
if not sock.poll(int(timeout * 1000)):
    sock.close()
    ctx.term()
    sys.exit('no response within {} s'.format(timeout))

resp = tnetstring.loads(sock.recv()[1:])
sock.close()
ctx.term()

if resp.get(b'type') == b'error':
    sys.exit('error: {}'.format(resp[b'condition'].decode()))

out = sys.stdout.buffer
out.write(b'code=%d reason=%s\n' % (resp[b'code'], resp.get(b'reason', b'')))
for name, value in resp.get(b'headers', []):
    out.write(name + b': ' + value + b'\n')
out.write(b'\n')
out.write(resp.get(b'body', b''))
out.flush()
