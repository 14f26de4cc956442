# streamhandler.py's behaviour on condure.handler, plus a WebSocket echo: a request
# body is read under credits, the response streams in five parts, one second apart
import logging

import gevent
from zbase import BASE, BIND

from condure.handler import Handler

logging.basicConfig(level=logging.INFO, format='%(message)s')
log = logging.getLogger('stream_lib')


def app(req):
    if req.is_websocket:
        ws = req.accept_websocket(protocol=(req.subprotocols or [None])[0])
        for message in ws:  # until the client closes
            ws.send(message)
        return
    body = req.body.read()
    if body:
        log.info('BODY %s %d bytes', req.uri, len(body))
    req.start(200, headers=[('Content-Type', 'text/plain')])
    for i in range(1, 6):
        req.write(b'part %d of 5\n' % i)
        if i < 5:
            gevent.sleep(1.0)
    req.end()


Handler(app, BASE, bind=BIND).serve_forever()
