# this handler just outputs the request ID
import os

import tnetstring
import zmq

# base of the --zclient-stream spec; tests point this at a temporary directory
zbase = os.environ.get('CONDURE_ZBASE', 'ipc://client')

ctx = zmq.Context()
sock = ctx.socket(zmq.PULL)
sock.connect(zbase + '-out')

while True:
    m = sock.recv_multipart()
    req = tnetstring.loads(m[0][1:])
    # one line per request, flushed, so `| xargs -n 2 ...` sees it at once
    print('{} {}'.format(req[b'from'].decode(), req[b'id'].decode()), flush=True)
