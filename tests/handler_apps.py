"""Handler processes on condure.handler, for the end-to-end tests:

    python tests/handler_apps.py APP BASE [--bind] [--req] [--handoff ENDPOINT]

Each app logs what the tests check to stdout (`EVENT ...` lines), through
the logging module. A real process on real sockets: the tests start it
next to a real condure (ours or the Rust 1.9.1 binary).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's condure

import gevent  # noqa: E402
import zmq.green as zmq  # noqa: E402

from condure.handler import (Cancelled, Handler, ReqHandler, SessionEnded,  # noqa: E402
                             WebSocket, WebSocketClosed)

log = logging.getLogger("handler_apps")


def event(text: str) -> None:
    log.info("EVENT %s", text)


ACTIVE = [0]


def general(req) -> None:  # type: ignore[no-untyped-def]
    """Paths: / hello; /echo the body's size and sha256; /stream?N&SIZE
    N writes of SIZE bytes; /big?SIZE one response of SIZE bytes; /slow a
    response that never ends (cancel test); /env the request's fields;
    ws:// echo with the offered subprotocol, /reject refuses."""
    path, _, query = req.uri.partition("://")[2].partition("/")[2].partition("?")
    path = "/" + path
    if req.is_websocket:
        if path == "/push":  # sends only, never receives: learns of the close by sending
            ws = req.accept_websocket()
            try:
                while True:
                    ws.send("tick")
                    gevent.sleep(0.05)
            except WebSocketClosed as e:
                event(f"push closed code={e.code}")
            return
        if path == "/reject":
            req.reject(403, headers=[("Content-Type", "text/plain")], body=b"go away\n")
            return
        ws = req.accept_websocket(protocol=(req.subprotocols or [None])[0])
        try:
            while True:
                msg = ws.receive()
                if msg == "close-me":
                    ws.close(4001, "bye")
                    event(f"closed by handler code={ws.close_code}")
                    return
                ws.send(msg)
        except WebSocketClosed as e:
            event(f"ws closed code={e.code} reason={e.reason}")
        return
    if path == "/echo":
        data = req.body.read()
        event(f"body {len(data)}")
        req.respond(200, headers=[("Content-Type", "text/plain")],
                    body=b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode()))
    elif path == "/stream":
        n, size = (int(x) for x in query.split("&"))
        req.start(200, headers=[("Content-Type", "application/octet-stream")])
        for i in range(n):
            req.write(bytes([65 + i % 26]) * size)
        req.end()
    elif path == "/big":
        req.respond(200, body=b"z" * int(query))
    elif path == "/slow":
        req.start(200, headers=[("Content-Type", "text/plain")])
        req.write(b"first\n")
        try:
            req.ended.wait(10)
            req.write(b"never\n")
        except Cancelled:
            event("cancelled")
    elif path == "/hold":  # for the concurrency bound: how many run at once
        ACTIVE[0] += 1
        event(f"active {ACTIVE[0]}")
        gevent.sleep(0.3)
        ACTIVE[0] -= 1
        req.respond(200, body=b"held")
    elif path == "/env":
        req.respond(200, body=f"{req.method} {req.uri} {req.peer[0] if req.peer else '-'} "
                              f"{req.header('X-Test')}".encode())
    else:
        req.respond(200, headers=[("Content-Type", "text/plain")], body=b"hello world\n")


def handoff_from(endpoint: str):  # type: ignore[no-untyped-def]
    """The first process: starts the response (or accepts the WebSocket),
    then passes the session to the process listening on `endpoint`."""
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(endpoint)

    def app(req) -> None:  # type: ignore[no-untyped-def]
        if req.is_websocket:
            ws = req.accept_websocket()
            first = ws.receive()
            ws.send(f"A got {first}")
        else:
            req.start(200, headers=[("Content-Type", "text/plain")])
            req.write(b"from A\n")
        state = req.handoff()
        event(f"handed off {req.rid.decode()}")
        push.send(state)
    return app


def handoff_to(handler: Handler, endpoint: str) -> None:
    """The second process: adopts what arrives on `endpoint`."""
    pull = zmq.Context.instance().socket(zmq.PULL)
    pull.bind(endpoint)

    def continued(req) -> None:  # type: ignore[no-untyped-def]
        event(f"adopted {req.rid.decode()}")
        if req.is_websocket:
            ws = WebSocket(req)
            try:
                for msg in ws:
                    ws.send(f"B got {msg}")
            except SessionEnded:
                pass
            event("ws done")
        else:
            req.write(b"from B\n")
            req.end(b"the end\n")

    def loop() -> None:
        while True:
            handler.adopt(pull.recv(), continued)
    gevent.spawn(loop)


def req_mode(req) -> None:  # type: ignore[no-untyped-def]
    req.respond(200, headers=[("Content-Type", "text/plain")],
                body=b"req %s %d\n" % (req.method.encode(), len(req.body.read())))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("app", choices=["general", "handoff-from", "handoff-to", "req"])
    p.add_argument("base")
    p.add_argument("--bind", action="store_true")
    p.add_argument("--handoff", default="")
    p.add_argument("--concurrency", type=int, default=100)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    if args.app == "req":
        ReqHandler(req_mode, args.base, bind=args.bind).serve_forever()
        return
    app = handoff_from(args.handoff) if args.app == "handoff-from" else general
    h = Handler(app, args.base, bind=args.bind, concurrency=args.concurrency,
                take_requests=args.app != "handoff-to")  # B only takes what A hands it
    if args.app == "handoff-to":
        handoff_to(h, args.handoff)
    h.start()
    event("ready")
    h.serve_forever()


if __name__ == "__main__":
    main()
