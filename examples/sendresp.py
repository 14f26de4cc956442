# this program sends a response to a certain request ID
import sys
import time

import tnetstring
import zmq
from zbase import endpoint

if len(sys.argv) != 4:
    sys.exit('usage: {} BODY ADDR ID'.format(sys.argv[0]))

body = sys.argv[1]
addr = sys.argv[2].encode()
rid = sys.argv[3].encode()


ctx = zmq.Context()
sock = ctx.socket(zmq.PUB)
sock.connect(endpoint('-in'))

# await subscription (PUB drops everything sent before it has seen condure's
# SUB subscription, so give the connection a moment)
time.sleep(0.1)

resp = {}
resp[b'from'] = b'sendresp'
resp[b'id'] = rid
resp[b'code'] = 200
resp[b'reason'] = b'OK'
resp[b'headers'] = [[b'Content-Type', b'text/plain']]
resp[b'body'] = '{}\n'.format(body).encode()

sock.send(addr + b' T' + tnetstring.dumps(resp))

# flush the message before the process exits
sock.close(linger=1000)
ctx.term()
