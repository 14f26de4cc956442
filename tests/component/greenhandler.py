"""A handler played with zmq.green sockets in the in-process tests' hub."""
from __future__ import annotations

import gevent
import tnetstring
import zmq.green as zmq


class GreenHandler:
    def __init__(self, ctx: zmq.Context, base: str, ident: bytes) -> None:
        self.ident = ident
        self.pull = ctx.socket(zmq.PULL)
        self.pull.connect(base + "-out")
        self.router = ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.IDENTITY, ident)
        self.router.connect(base + "-out-stream")
        self.pub = ctx.socket(zmq.PUB)
        self.pub.connect(base + "-in")
        gevent.sleep(0.3)  # subscription propagation

    def request(self) -> dict:
        return tnetstring.loads(self.pull.recv()[1:])

    def recv(self) -> dict:
        return tnetstring.loads(self.router.recv_multipart()[-1][1:])

    def send(self, msg: dict) -> None:
        msg = {b"from": self.ident, **msg}
        self.pub.send(b"condure T" + tnetstring.dumps(msg))

    def close(self) -> None:
        for s in (self.pull, self.router, self.pub):
            s.close(0)
