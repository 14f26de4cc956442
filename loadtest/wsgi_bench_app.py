"""The Flask hello world of loadtest/wsgi_bench.py, the same for both stacks."""
from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello():  # type: ignore[no-untyped-def]
    return "hello world\n", 200, {"Content-Type": "text/plain"}
