# the seed's hello world on condure.handler: the library does the sockets, framing,
# seq numbers, credits and keep-alives (compare basichandler.py, which does them by hand)
import logging

from zbase import BASE, BIND

from condure.handler import Handler

logging.basicConfig(level=logging.INFO)  # the library says where it is attached


def app(req):
    req.respond(200, headers=[('Content-Type', 'text/plain')], body=b'hello world\n')


Handler(app, BASE, bind=BIND).serve_forever()
