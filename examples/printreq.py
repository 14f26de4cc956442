# this handler just outputs the request ID

import tnetstring
import zmq
from zbase import endpoint


ctx = zmq.Context()
sock = ctx.socket(zmq.PULL)
sock.connect(endpoint('-out'))

while True:
    m = sock.recv_multipart()
    req = tnetstring.loads(m[0][1:])
    # one line per request, flushed, so `| xargs -n 2 ...` sees it at once
    print('{} {}'.format(req[b'from'].decode(), req[b'id'].decode()), flush=True)
