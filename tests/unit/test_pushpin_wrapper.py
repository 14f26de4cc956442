"""condure-pushpin (condure/pushpin.py): the client-side options derived from
the arguments Pushpin's runner gives condure_bin."""
from __future__ import annotations

import sys

import pytest

from condure.pushpin import UsageError, client_options, command, zclient_stream

RUNNER_ARGS = ["--log-level=3", "--listen=127.0.0.1:7999,stream",
               "--zclient-stream=ipc:///run/pushpin/pushpin-condure",
               "--buffer-size=8192", "--stream-maxconn=50000"]


def test_derives_zurl_endpoints_from_the_runner_spec() -> None:
    assert client_options(RUNNER_ARGS) == [
        "--zserver-stream", "ipc:///run/pushpin/pushpin-zurl",
        "--zserver-req", "ipc:///run/pushpin/pushpin-zurl-req"]


def test_separate_value_form_and_other_prefix() -> None:
    args = ["--zclient-stream", "ipc:///tmp/r/xcondure", "--listen", "8000"]
    assert zclient_stream(args) == "ipc:///tmp/r/xcondure"
    assert client_options(args)[:2] == ["--zserver-stream", "ipc:///tmp/r/xzurl"]


def test_command_keeps_the_runner_args_first() -> None:
    cmd = command(RUNNER_ARGS)
    assert cmd[:4] == [sys.executable, "-P", "-m", "condure"]
    assert cmd[4:9] == RUNNER_ARGS
    assert cmd[9:] == client_options(RUNNER_ARGS)


@pytest.mark.parametrize("args, message", [
    ([], "expected one --zclient-stream"),
    (["--listen=8000"], "expected one --zclient-stream"),
    (["--zclient-stream"], "needs a value"),
    (["--zclient-stream=ipc://a/condure", "--zclient-stream=ipc://b/condure"],
     "expected one --zclient-stream"),
    (["--zclient-stream=tcp://127.0.0.1:5000"], "is not ipc://...condure"),
    (["--zclient-stream=ipc:///run/pushpin/pushpin-server"], "is not ipc://...condure"),
])
def test_bad_arguments(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace(".", r"\.")):
        client_options(args)
