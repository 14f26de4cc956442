"""Handlers in Python: a ZHTTP handler library on gevent and zmq.green.

    from condure.handler import Handler

    def app(req):
        req.respond(200, headers=[("Content-Type", "text/plain")], body=b"hello world\\n")

    Handler(app, "ipc://client").serve_forever()

One `Request` per request, in a greenlet of its own (at most `concurrency`
at a time): its head, `body` read under credits, `respond` or `start` /
`write` / `end` under condure's credits, `accept_websocket` / `reject`,
`handoff`. Keep-alives, expiry, seq numbers and credits are handled here;
`cancel` and lost sessions raise `SessionEnded` exceptions in the request's
greenlet. `ReqHandler` serves condure's req-mode (--zclient-req) interface.
"""
from .errors import Cancelled, SessionEnded, SessionLost, WebSocketClosed
from .request import Body, Request
from .sockets import Handler, ReqHandler, ReqRequest
from .websocket import WebSocket

__all__ = ["Body", "Cancelled", "Handler", "ReqHandler", "ReqRequest", "Request",
           "SessionEnded", "SessionLost", "WebSocket", "WebSocketClosed"]
