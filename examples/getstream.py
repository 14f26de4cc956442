# this program fetches a URL through condure's client mode, stream interface, printing the body
# pieces as they arrive and granting credits back for each one
#
# condure must run with --zserver-stream (e.g. condure --zserver-stream ipc://server). Sockets:
#   PUSH   connect server-in         the first message of the session
#   ROUTER connect server-in-stream  every later message, sent to condure's address
#   SUB    connect server-out        everything condure sends us, prefixed with our `from`
#
# condure answers with a keep-alive (its address is the `from` of that message), then the
# response head (code, reason, headers, more), then body pieces of at most our credits; the
# message without `more` ends the response.
#
# usage: getstream.py URL    (CONDURE_ZSERVER: the --zserver-stream spec base, default ipc://server)
import os
import sys
import time
import uuid

import tnetstring
import zmq
from zbase import CLIENT_MODE_PORTS, endpoint

if len(sys.argv) != 2:
    sys.exit('usage: {} URL'.format(sys.argv[0]))

spec = os.environ.get('CONDURE_ZSERVER', 'ipc://server')

CREDITS = 8192              # response body bytes condure may send ahead
KEEP_ALIVE_INTERVAL = 30.0  # condure ends a session after 60 s without a message from us
GIVE_UP = 120.0             # nothing at all from condure for this long: stop

instance_id = 'getstream.{}'.format(os.getpid()).encode()
rid = str(uuid.uuid4()).encode()

ctx = zmq.Context()
out_sock = ctx.socket(zmq.PUSH)
out_sock.connect(endpoint('-in', spec, CLIENT_MODE_PORTS))
out_stream_sock = ctx.socket(zmq.ROUTER)
out_stream_sock.connect(endpoint('-in-stream', spec, CLIENT_MODE_PORTS))
in_sock = ctx.socket(zmq.SUB)
in_sock.setsockopt(zmq.SUBSCRIBE, instance_id + b' ')
in_sock.connect(endpoint('-out', spec, CLIENT_MODE_PORTS))
for s in (out_sock, out_stream_sock, in_sock):
    s.setsockopt(zmq.LINGER, 1000)

# await subscription (PUB drops what it sends before it has seen our subscription)
time.sleep(0.5)

req = {
    b'from': instance_id,
    b'id': rid,
    b'seq': 0,
    b'method': b'GET',
    b'uri': sys.argv[1].encode(),
    b'stream': True,
    b'credits': CREDITS,
}
out_sock.send(b'T' + tnetstring.dumps(req))

seq = 1       # our next seq
addr = None   # condure's address, learnt from its first message


def send(fields):
    global seq
    m = {b'from': instance_id, b'id': rid, b'seq': seq}
    m.update(fields)
    seq += 1
    out_stream_sock.send_multipart([addr, b'', b'T' + tnetstring.dumps(m)])


out = sys.stdout.buffer
prefix = instance_id + b' '
last_heard = time.monotonic()
status = 0
while True:
    if not in_sock.poll(int(KEEP_ALIVE_INTERVAL * 1000)):
        if time.monotonic() - last_heard > GIVE_UP:
            print('no message from condure for {} s'.format(GIVE_UP), file=sys.stderr)
            status = 1
            break
        if addr is not None:
            send({b'type': b'keep-alive'})
        continue
    frame = in_sock.recv()
    if not frame.startswith(prefix + b'T'):
        continue
    m = tnetstring.loads(frame[len(prefix) + 1:])
    if m.get(b'id') != rid:
        continue
    last_heard = time.monotonic()
    addr = m[b'from']
    mtype = m.get(b'type')
    if mtype == b'error':
        print('error: {}'.format(m.get(b'condition', b'').decode()), file=sys.stderr)
        status = 1
        break
    if mtype == b'cancel':
        print('cancelled', file=sys.stderr)
        status = 1
        break
    if mtype is not None:
        continue  # keep-alive, credit
    if b'code' in m:
        out.write(b'code=%d reason=%s\n' % (m[b'code'], m.get(b'reason', b'')))
        for name, value in m.get(b'headers', []):
            out.write(name + b': ' + value + b'\n')
        out.write(b'\n')
        out.flush()
    body = m.get(b'body', b'')
    if body:
        print('body piece: {} bytes'.format(len(body)), file=sys.stderr, flush=True)
        out.write(body)
        out.flush()
    if not m.get(b'more'):
        break
    if body:
        send({b'type': b'credit', b'credits': len(body)})

out.flush()
for s in (out_sock, out_stream_sock, in_sock):
    s.close()
ctx.term()
sys.exit(status)
