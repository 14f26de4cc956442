"""WSGI applications for tests/e2e/test_wsgi.py: a Flask app (Flask is a test
dependency) and a bare PEP 3333 one, served by `python -m condure.wsgi`."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time

from flask import Flask, Response, request, stream_with_context

app = Flask(__name__)
log = logging.getLogger("wsgi_apps")


@app.get("/")
def hello():  # type: ignore[no-untyped-def]
    return "hello world\n", 200, {"Content-Type": "text/plain"}


@app.get("/pid")
def pid():  # type: ignore[no-untyped-def]
    return str(os.getpid())


@app.post("/upload")
def upload():  # type: ignore[no-untyped-def]
    digest = hashlib.sha256()
    total = 0
    while chunk := request.stream.read(65536):  # streamed: never the whole body in memory
        digest.update(chunk)
        total += len(chunk)
    return {"bytes": total, "sha256": digest.hexdigest()}


@app.get("/stream")
def stream():  # type: ignore[no-untyped-def]
    n = int(request.args.get("n", "5"))
    size = int(request.args.get("size", "10"))
    delay = float(request.args.get("delay", "0"))

    @stream_with_context
    def parts():  # type: ignore[no-untyped-def]
        for i in range(n):
            yield bytes([65 + i % 26]) * size
            if delay:
                time.sleep(delay)
    return Response(parts(), mimetype="application/octet-stream")


@app.get("/sized")
def sized():  # type: ignore[no-untyped-def]
    """A streamed body with the application's own Content-Length."""
    def parts():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"0123456789"
    return Response(parts(), headers={"Content-Length": "100"}, mimetype="text/plain")


@app.get("/slowish")
def slowish():  # type: ignore[no-untyped-def]
    # which gateway took which request: the restart test checks its losses against these
    log.info("took %s", request.args.get("t", "-"))
    time.sleep(0.05)  # monkey-patched: other requests run meanwhile
    return "done"


@app.route("/env", methods=["GET", "POST"])
def env():  # type: ignore[no-untyped-def]
    e = request.environ
    keys = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
            "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "CONTENT_TYPE", "CONTENT_LENGTH",
            "HTTP_X_TEST", "wsgi.url_scheme"]
    return json.dumps({k: e.get(k) for k in keys})


@app.get("/fail")
def fail():  # type: ignore[no-untyped-def]
    raise RuntimeError("failing on purpose")


def bare(environ, start_response):  # type: ignore[no-untyped-def]
    """PEP 3333 without a framework: wsgi.errors, readline, the write callable."""
    environ["wsgi.errors"].write("bare app says hi\n")
    lines = environ["wsgi.input"].readlines()
    write = start_response("201 Created", [("Content-Type", "text/plain")])
    write(b"lines=%d\n" % len(lines))
    return [b"last=" + (lines[-1] if lines else b"-")]
