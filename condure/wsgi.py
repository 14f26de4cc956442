"""A WSGI gateway: any PEP 3333 application as a ZHTTP handler of condure.

    python -m condure.wsgi module:app [--zclient-stream BASE] [--concurrency N]

Each request runs the application in a greenlet of its own (condure.handler):
`wsgi.input` is the request body read under credits (nothing comes from the
client faster than the application reads), the response goes out under
condure's credits, whole (condure adds a Content-Length) or streamed (the
application's Content-Length, or chunked). SERVER_NAME, SERVER_PORT and
wsgi.url_scheme come from the request's uri, REMOTE_ADDR/REMOTE_PORT from
condure's peer fields.

Several gateway processes on one condure share the load (condure hands each
request to one of them). On SIGTERM a process takes no more requests,
finishes those it has, then exits; the client connections stay in condure
and the other processes go on serving them (but what condure had pushed
towards the process and it had not read yet is lost with its socket). With
`--workers N` one parent holds condure's PULL socket and N workers ask it
for requests (condure.handler.prefork): SIGHUP restarts the workers and
loses nothing.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any, Callable, Iterable
from urllib.parse import unquote, urlsplit

log = logging.getLogger("condure.wsgi")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ErrorStream:
    """wsgi.errors: the application's error output, as log lines."""

    def __init__(self) -> None:
        self._buf = ""

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            log.error("%s", line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._buf:
            log.error("%s", self._buf)
            self._buf = ""


def environ_for(req: Any, errors: Any) -> dict[str, Any]:
    """The PEP 3333 environ of a condure.handler Request (or ReqRequest)."""
    uri = urlsplit(req.uri)
    scheme = {"ws": "http", "wss": "https"}.get(uri.scheme, uri.scheme or "http")
    secure = scheme == "https"
    port = uri.port or (443 if secure else 80)
    raw_path = uri.path or "/"
    env: dict[str, Any] = {
        "REQUEST_METHOD": req.method,
        "SCRIPT_NAME": "",
        # PEP 3333: the path decoded, as latin-1 characters of its bytes
        "PATH_INFO": unquote(raw_path, encoding="latin-1"),
        "RAW_URI": raw_path + (f"?{uri.query}" if uri.query else ""),
        "QUERY_STRING": uri.query,
        "SERVER_NAME": uri.hostname or "localhost",
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": req.body,
        # the stream ends where the body ends (chunked bodies too), so an
        # application may read it without a CONTENT_LENGTH (werkzeug's flag)
        "wsgi.input_terminated": True,
        "wsgi.errors": errors,
        "wsgi.multithread": True,  # greenlets: several requests at once in one process
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "condure.request": req,
    }
    if req.peer is not None:
        env["REMOTE_ADDR"], port_ = req.peer
        env["REMOTE_PORT"] = str(port_)
    for name_b, value_b in req.headers:
        name = name_b.decode("latin-1").upper().replace("-", "_")
        value = value_b.decode("latin-1")
        if name == "CONTENT_TYPE" or name == "CONTENT_LENGTH":
            key = name
        else:
            key = "HTTP_" + name
            if "_" in name_b.decode("latin-1"):
                continue  # a name with `_` could pass for one with `-`: dropped, as gunicorn does
        if key in env and key.startswith("HTTP_"):
            env[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
        else:
            env[key] = value
    return env


class Gateway:
    """`app` as a condure.handler application: call it with a Request."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.errors = ErrorStream()

    def __call__(self, req: Any) -> None:
        if req.is_websocket:
            req.reject(400, headers=[("Content-Type", "text/plain")],
                       body=b"WebSocket is not served by the WSGI gateway\n")
            return
        env = environ_for(req, self.errors)
        state: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            if exc_info is not None:
                try:
                    if req.started:
                        raise exc_info[1].with_traceback(exc_info[2])
                finally:
                    exc_info = None
            elif "status" in state:
                raise AssertionError("start_response called twice without exc_info")
            code, _, reason = status.partition(" ")
            state["status"] = (int(code), reason)
            state["headers"] = headers
            return write

        def begin() -> None:
            if not req.started:
                code, reason = state["status"]
                req.start(code, reason, state["headers"], defer=True)

        def write(data: bytes) -> None:  # the legacy write callable
            if "status" not in state:
                raise AssertionError("write() before start_response")
            begin()
            req.write(data)

        result = self.app(env, start_response)
        try:
            it = iter(result)
            first = b""
            for first in it:  # the first non-empty piece: the head waits for it (PEP 3333)
                if first:
                    break
            if "status" not in state:
                raise AssertionError("the application did not call start_response")
            second = next(it, None) if first else None
            if second is None and not req.started:
                # the whole body in one piece (the usual case): one packet
                code, reason = state["status"]
                req.respond(code, reason, state["headers"], first)
                return
            begin()
            req.write(first)
            if second is not None:
                req.write(second)
            for data in it:
                req.write(data)
            req.end()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


def load_app(spec: str) -> WSGIApp:
    """`module:attribute` (default attribute `application`, as gunicorn)."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in (attr or "application").split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m condure.wsgi",
                                description="Serve a WSGI application as a ZHTTP handler of condure.")
    p.add_argument("app", help="the application, as module:attribute")
    p.add_argument("--zclient-stream", action="append", metavar="BASE",
                   help="condure's --zclient-stream spec base (repeatable; default ipc://client)")
    p.add_argument("--zclient-req", action="append", metavar="SPEC",
                   help="condure's --zclient-req endpoint (req mode; repeatable)")
    p.add_argument("--bind", action="store_true",
                   help="bind the sockets (for condure --zclient-connect) instead of connecting")
    p.add_argument("--concurrency", type=int, default=100,
                   help="requests served at once by this process (default 100)")
    p.add_argument("--stop-timeout", type=float, default=30.0,
                   help="seconds in-flight requests get on SIGTERM (default 30)")
    p.add_argument("--workers", type=int, default=0,
                   help="N worker processes behind one holder of condure's PULL socket: "
                        "SIGHUP restarts them without losing a request (default 0: this "
                        "process serves)")
    p.add_argument("--worker-of", default=None, help=argparse.SUPPRESS)  # a worker's parent
    p.add_argument("--no-monkey-patch", action="store_true",
                   help="do not patch the standard library for gevent")
    p.add_argument("--chdir", default=None, help="import the application from this directory")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    if args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    if args.workers < 0:
        p.error("--workers must not be negative")
    if args.workers and args.zclient_req:
        p.error("--workers serves the stream interface only")
    return args


def run_dispatcher(args: argparse.Namespace, argv: list[str]) -> int:
    """--workers N: this process holds condure's PULL and runs the workers."""
    import os
    import shutil
    import subprocess
    import tempfile
    from .config import stream_endpoints
    from .handler.prefork import Dispatcher
    tmp = tempfile.mkdtemp(prefix="cwsgi", dir="/tmp")
    dispatch = f"ipc://{tmp}/dispatch"
    # the worker's command line: ours, without --workers, plus its parent
    worker_argv: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--workers":
            skip = True
            continue
        if a.startswith("--workers="):
            continue
        worker_argv.append(a)
    cmd = [sys.executable, "-m", "condure.wsgi", *worker_argv, "--worker-of", dispatch]
    bases = args.zclient_stream or ["ipc://client"]
    try:
        return Dispatcher([stream_endpoints(b)[0] for b in bases], dispatch, args.bind,
                          lambda: subprocess.Popen(cmd, cwd=os.getcwd()), args.workers).run()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.workers:
        logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                            format="[%(levelname)s] %(asctime)s [%(name)s] %(message)s")
        return run_dispatcher(args, argv)
    if not args.no_monkey_patch:
        # blocking libraries in the application (sockets, time.sleep) must
        # yield to the other requests' greenlets, as under gunicorn's gevent worker
        from gevent import monkey
        monkey.patch_all()
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="[%(levelname)s] %(asctime)s [%(name)s] %(message)s")
    import os
    sys.path.insert(0, os.path.abspath(args.chdir) if args.chdir else os.getcwd())
    from .handler import Handler, ReqHandler
    app = load_app(args.app)
    gateway = Gateway(app)
    if args.worker_of:
        run_worker(gateway, args)
    elif args.zclient_req:
        ReqHandler(gateway, args.zclient_req, bind=args.bind,
                   concurrency=args.concurrency).serve_forever(args.stop_timeout)
    else:
        Handler(gateway, args.zclient_stream or ["ipc://client"], bind=args.bind,
                concurrency=args.concurrency).serve_forever(args.stop_timeout)
    return 0


def run_worker(gateway: Gateway, args: argparse.Namespace) -> None:
    """A worker of --workers N: requests come from the parent, answers go to
    condure directly (our own from, ROUTER and PUB)."""
    import signal

    import gevent
    from gevent.event import Event

    from .handler import Handler
    from .handler.prefork import feed
    handler = Handler(gateway, args.zclient_stream or ["ipc://client"], bind=args.bind,
                      concurrency=args.concurrency, take_requests=False)
    handler.start()
    stop = Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    feed(handler, args.worker_of, stop)
    handler.stop(args.stop_timeout)


if __name__ == "__main__":
    sys.exit(main())
