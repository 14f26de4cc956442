#!/usr/bin/env python3
"""hypercorn serving bench_handler.py's tiny response, for the HTTP/2 rows of bench.py.

Usage::

    python loadtest/hypercorn_app.py --port 8000 [--host 127.0.0.1]

A minimal ASGI app answers every request `200` with `hello world\\n`
(`content-type: text/plain`, as bench_handler.py does), in-process: there
is no handler hop, unlike condure. hypercorn runs with one worker
(asyncio), its access log off, and with its per-connection request limit
(`keep_alive_max_requests`, 1000 by default: after that many requests it
ends the connection) raised to 10**9, so h2load's connections live for the
whole run as they do against condure; the other settings are hypercorn's
defaults (100 concurrent streams per connection, as condure announces).
hypercorn comes from loadtest/requirements.txt, not from the project's
requirements.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Awaitable, Callable

BODY = b"hello world\n"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(BODY))]


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
              send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while True:  # the request body, if any, is read and dropped
        msg = await receive()
        if msg["type"] != "http.request" or not msg.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="hypercorn serving a hello-world ASGI app")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config
    except ImportError:
        print("hypercorn is not installed: pip install -r loadtest/requirements.txt",
              file=sys.stderr)
        return 2
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    config.keep_alive_max_requests = 10 ** 9  # default 1000: the connection would end
    asyncio.run(serve(app, config))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
