"""condure/config.py and options.py: condure 1.10.1's command line (src/main.rs, src/app.rs)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from condure import CONDURE_VERSION, __version__
from condure.config import (
    CONNS_MAX,
    WORKERS_MAX,
    Config,
    ConfigError,
    ListenSpec,
    PrometheusSpec,
    UnixSocketSpec,
    parse_debug_socket,
    parse_listen,
    parse_prometheus,
    parse_uint,
)
from condure.options import parse_args

DEFAULT_LISTENER = ListenSpec(addr="0.0.0.0", port=8000, stream=True)


def error_of(argv: list[str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_args(argv)
    return info.value


# --- defaults ---------------------------------------------------------------

EXPECTED_DEFAULTS = {
    "log_level": 2,
    "id": "condure",
    "workers": 1,
    "req_maxconn": 100,
    "stream_maxconn": 10000,
    "buffer_size": 8192,
    "body_buffer_size": 100000,
    "blocks_max": None,  # 2 x stream_maxconn (connmgr.md 3.1)
    "connection_blocks_max": 2,
    "messages_max": 100,
    "req_timeout": 30,
    "stream_timeout": 1800,
    "listen": (DEFAULT_LISTENER,),
    "zclient_req": ("ipc://client",),
    "zclient_stream": ("ipc://client",),
    "zclient_connect": False,
    "zserver_req": (),
    "zserver_stream": (),
    "zserver_connect": False,
    "ipc_file_mode": 0,
    "tls_identities_dir": ".",
    "compression": False,
    "compression_message_max": 16 * 1024 * 1024,
    "client_ws_window": 200_000,
    "deny_out_internal": False,
    "no_http2": False,
    "sizes": False,
    "http_parser": "auto",
    "shutdown_timeout": 2,
    "prometheus": None,
    "debug_socket": None,
    "access_log": False,
}


def test_every_field_has_an_expected_default() -> None:
    assert {f.name for f in dataclasses.fields(Config)} == set(EXPECTED_DEFAULTS)


@pytest.mark.parametrize("field,expected", EXPECTED_DEFAULTS.items())
def test_default(field: str, expected: object) -> None:
    assert getattr(parse_args([]), field) == expected


def test_config_is_frozen() -> None:
    config = parse_args([])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 3  # type: ignore[misc]


def test_dataclass_defaults_match_parser_except_listen() -> None:
    assert dataclasses.replace(Config(), listen=(DEFAULT_LISTENER,)) == parse_args([])


# --- value options, both spellings ------------------------------------------

VALUE_OPTIONS = [
    ("log-level", "4", "log_level", 4),
    ("id", "proxy-1", "id", "proxy-1"),
    ("workers", "4", "workers", 4),
    ("req-maxconn", "50", "req_maxconn", 50),
    ("stream-maxconn", "50000", "stream_maxconn", 50000),
    ("buffer-size", "16384", "buffer_size", 16384),
    ("body-buffer-size", "1000", "body_buffer_size", 1000),
    ("blocks-max", "20000", "blocks_max", 20000),
    ("connection-blocks-max", "5", "connection_blocks_max", 5),
    ("messages-max", "7", "messages_max", 7),
    ("req-timeout", "4", "req_timeout", 4),
    ("stream-timeout", "5", "stream_timeout", 5),
    ("ipc-file-mode", "660", "ipc_file_mode", 0o660),
    ("tls-identities-dir", "/etc/certs", "tls_identities_dir", "/etc/certs"),
    ("http-parser", "httptools", "http_parser", "httptools"),
    ("shutdown-timeout", "2", "shutdown_timeout", 2),
    ("compression-message-max", "100000", "compression_message_max", 100000),
    ("compression-message-max", "0", "compression_message_max", 0),
    ("client-ws-window", "65536", "client_ws_window", 65536),
    ("client-ws-window", "0", "client_ws_window", 0),
    ("http-parser", "httptools", "http_parser", "httptools"),
    ("zclient-req", "tcp://127.0.0.1:5000", "zclient_req", ("tcp://127.0.0.1:5000",)),
    ("zclient-stream", "ipc:///run/x", "zclient_stream", ("ipc:///run/x",)),
    ("zserver-req", "ipc://zs", "zserver_req", ("ipc://zs",)),
    ("zserver-stream", "ipc://zs", "zserver_stream", ("ipc://zs",)),
    ("listen", "127.0.0.1:7999", "listen", (ListenSpec(addr="127.0.0.1", port=7999),)),
]


@pytest.mark.parametrize("option,text,field,expected", VALUE_OPTIONS)
def test_option_with_equals(option: str, text: str, field: str, expected: object) -> None:
    assert getattr(parse_args([f"--{option}={text}"]), field) == expected


@pytest.mark.parametrize("option,text,field,expected", VALUE_OPTIONS)
def test_option_with_space(option: str, text: str, field: str, expected: object) -> None:
    assert getattr(parse_args([f"--{option}", text]), field) == expected


@pytest.mark.parametrize(
    "flag", ["zclient-connect", "zserver-connect", "compression", "deny-out-internal", "sizes",
             "access-log", "no-http2"]
)
def test_flags(flag: str) -> None:
    assert getattr(parse_args([f"--{flag}"]), flag.replace("-", "_")) is True


def test_pushpin_command_line() -> None:
    config = parse_args([
        "--log-level=2",
        "--listen=0.0.0.0:7999,stream",
        "--listen=0.0.0.0:443,stream,tls,default-cert=default_443",
        "--listen=/run/pushpin/server,local,stream",
        "--zclient-stream=ipc:///run/pushpin/pushpin-condure",
        "--buffer-size=8192",
        "--stream-maxconn=50000",
        "--tls-identities-dir=/etc/pushpin/certs",
    ])
    assert config.listen == (
        ListenSpec(addr="0.0.0.0", port=7999),
        ListenSpec(addr="0.0.0.0", port=443, tls=True, default_cert="default_443"),
        ListenSpec(path="/run/pushpin/server", local=True),
    )
    assert config.zclient_stream == ("ipc:///run/pushpin/pushpin-condure",)
    assert config.stream_maxconn == 50000
    assert config.tls_identities_dir == "/etc/pushpin/certs"


def test_large_log_level_is_accepted() -> None:
    assert parse_args(["--log-level=99"]).log_level == 99


def test_plus_sign_is_accepted_like_rust() -> None:
    assert parse_args(["--log-level=+3"]).log_level == 3


def test_id_with_dash_value_in_equals_form() -> None:
    assert parse_args(["--id=-x"]).id == "-x"


# --- ipc-file-mode is octal (D11) -------------------------------------------

@pytest.mark.parametrize("text,mode", [("777", 0o777), ("0660", 0o660), ("0", 0), ("7", 7)])
def test_ipc_file_mode_is_octal(text: str, mode: int) -> None:
    assert parse_args(["--ipc-file-mode", text]).ipc_file_mode == mode


def test_ipc_file_mode_rejects_non_octal_digit() -> None:
    assert str(error_of(["--ipc-file-mode=789"])) == (
        "failed to parse ipc-file-mode: invalid digit found in string"
    )


# --- repeatable options replace the default ---------------------------------

def test_zclient_stream_replaces_default() -> None:
    config = parse_args(["--zclient-stream=ipc://a", "--zclient-stream", "tcp://127.0.0.1:5000"])
    assert config.zclient_stream == ("ipc://a", "tcp://127.0.0.1:5000")


def test_zclient_req_replaces_default() -> None:
    config = parse_args(["--zclient-req=ipc://a", "--zclient-req=ipc://b"])
    assert config.zclient_req == ("ipc://a", "ipc://b")
    assert config.zclient_stream == ("ipc://client",)


def test_listen_replaces_default() -> None:
    config = parse_args(["--listen=9000", "--listen=9001,req"])
    assert config.listen == (
        ListenSpec(addr="0.0.0.0", port=9000),
        ListenSpec(addr="0.0.0.0", port=9001, stream=False),
    )


def test_zserver_specs_accumulate() -> None:
    config = parse_args(["--zserver-stream=ipc://a", "--zserver-stream=ipc://b"])
    assert config.zserver_stream == ("ipc://a", "ipc://b")


# --- ZeroMQ specs: checked when parsed ----------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["--zclient-stream=foo://x"], "base spec must be ipc or tcp"),
    (["--zclient-stream=tcp://127.0.0.1"],
     "error parsing tcp port in base spec: invalid digit found in string"),
    (["--zclient-stream=tcp://127.0.0.1:70000"],
     "error parsing tcp port in base spec: number too large to fit in target type"),
    (["--zclient-stream=tcp://127.0.0.1:65534"],  # its third port would be 65536
     "error parsing tcp port in base spec: tcp://127.0.0.1:65534"),
    (["--zserver-stream=tcp://127.0.0.1:65536"],
     "error parsing tcp port in base spec: number too large to fit in target type"),
    (["--listen=9000,req", "--zclient-req=tcp://127.0.0.1:70000"],
     "failed to parse zclient-req: invalid tcp port in tcp://127.0.0.1:70000:"
     " number too large to fit in target type"),
    (["--listen=9000,req", "--zclient-req=tcp://127.0.0.1:-1"],
     "failed to parse zclient-req: invalid tcp port in tcp://127.0.0.1:-1:"
     " invalid digit found in string"),
    (["--zserver-req=tcp://[::1]:99999"],
     "failed to parse zserver-req: invalid tcp port in tcp://[::1]:99999:"
     " number too large to fit in target type"),
])
def test_bad_zmq_spec(argv: list[str], message: str) -> None:
    error = error_of(argv)
    assert str(error) == message
    assert error.exit_status == 1


@pytest.mark.parametrize("argv", [
    ["--zclient-stream=tcp://127.0.0.1:65533"],
    ["--listen=9000,req", "--zclient-req=tcp://127.0.0.1:65535"],
    ["--listen=9000,req", "--zclient-req=tcp://*:*"],  # libzmq: any free port
    ["--listen=9000,req", "--zclient-req=ipc:///tmp/x:70000"],  # a path, not a port
    # specs no listener uses are not looked at, as by condure
    ["--listen=9000,req", "--zclient-stream=tcp://127.0.0.1:70000"],
    ["--listen=9000,stream", "--zclient-req=tcp://127.0.0.1:70000"],
])
def test_good_or_unused_zmq_spec(argv: list[str]) -> None:
    parse_args(argv)


# --- default listener rule (1.10.1) -----------------------------------------

def test_default_listener_without_any_listen_or_zserver() -> None:
    assert parse_args([]).listen == (DEFAULT_LISTENER,)


@pytest.mark.parametrize("option", ["--zserver-req=ipc://zs", "--zserver-stream=ipc://zs"])
def test_no_default_listener_in_client_mode(option: str) -> None:
    assert parse_args([option]).listen == ()


def test_explicit_listen_with_zserver() -> None:
    config = parse_args(["--zserver-stream=ipc://zs", "--listen=9000"])
    assert config.listen == (ListenSpec(addr="0.0.0.0", port=9000),)


def test_zclient_options_do_not_disable_default_listener() -> None:
    assert parse_args(["--zclient-stream=ipc://x"]).listen == (DEFAULT_LISTENER,)


# --- --listen forms ---------------------------------------------------------

@pytest.mark.parametrize(
    "text,expected",
    [
        ("8000", ListenSpec(addr="0.0.0.0", port=8000)),
        ("0", ListenSpec(addr="0.0.0.0", port=0)),
        ("65535", ListenSpec(addr="0.0.0.0", port=65535)),
        ("127.0.0.1:7999", ListenSpec(addr="127.0.0.1", port=7999)),
        ("[::1]:8000", ListenSpec(addr="::1", port=8000)),
        ("[::]:8000", ListenSpec(addr="::", port=8000)),
        ("[0:0:0:0:0:0:0:1]:80", ListenSpec(addr="::1", port=80)),
        ("[fe80::1%2]:80", ListenSpec(addr="fe80::1%2", port=80)),
        ("8000,stream", ListenSpec(addr="0.0.0.0", port=8000, stream=True)),
        ("8000,req", ListenSpec(addr="0.0.0.0", port=8000, stream=False)),
        ("8000,req,stream", ListenSpec(addr="0.0.0.0", port=8000, stream=True)),
        ("8000,tls", ListenSpec(addr="0.0.0.0", port=8000, tls=True)),
        (
            "127.0.0.1:443,stream,tls,default-cert=default_443",
            ListenSpec(addr="127.0.0.1", port=443, tls=True, default_cert="default_443"),
        ),
        ("/tmp/c.sock,local", ListenSpec(path="/tmp/c.sock", local=True)),
        ("/tmp/c.sock,local,req", ListenSpec(path="/tmp/c.sock", local=True, stream=False)),
        (
            "/tmp/c.sock,local,mode=660,user=www,group=web",
            ListenSpec(path="/tmp/c.sock", local=True, mode=0o660, user="www", group="web"),
        ),
        # condure drops tls on a Unix socket and mode/user/group on TCP
        ("/tmp/c.sock,local,tls", ListenSpec(path="/tmp/c.sock", local=True)),
        ("8000,mode=600,user=u", ListenSpec(addr="0.0.0.0", port=8000)),
    ],
)
def test_listen_forms(text: str, expected: ListenSpec) -> None:
    assert parse_listen(text) == expected


def test_local_listener_port_is_zero() -> None:
    spec = parse_listen("/tmp/c.sock,local")
    assert (spec.port, spec.path, spec.local) == (0, "/tmp/c.sock", True)


@pytest.mark.parametrize(
    "text,described",
    [
        ("8000", "0.0.0.0:8000"),
        ("127.0.0.1:8000", "127.0.0.1:8000"),
        ("[::1]:8000", "[::1]:8000"),
        ("/tmp/c.sock,local", "/tmp/c.sock"),
    ],
)
def test_describe(text: str, described: str) -> None:
    assert parse_listen(text).describe() == described


@pytest.mark.parametrize(
    "text,message",
    [
        ("8000,foo", "failed to parse listen: invalid param: foo"),
        ("8000,tls=1,bogus=2", "failed to parse listen: invalid param: bogus=2"),
        ("8000,,stream", "failed to parse listen: invalid param:"),
        ("8000,Stream", "failed to parse listen: invalid param: Stream"),
        ("x:99999", "failed to parse listen: invalid port 99999"),
        ("65536", "failed to parse listen: invalid port 65536"),
        ("-1", "failed to parse listen: invalid port -1"),
        ("", "failed to parse listen: invalid port"),
        ("127.0.0.1:", "failed to parse listen: invalid port"),
        ("[::1]", "failed to parse listen: invalid port 1]"),
        ("127.0.0.1:http", "failed to parse listen: invalid port http"),
        ("localhost:8000", "failed to parse listen: invalid socket address syntax"),
        ("::1:8000", "failed to parse listen: invalid socket address syntax"),
        ("256.0.0.1:80", "failed to parse listen: invalid socket address syntax"),
        ("127.0.0.01:80", "failed to parse listen: invalid socket address syntax"),
        ("[1.2.3.4]:80", "failed to parse listen: invalid socket address syntax"),
        ("[fe80::1%eth0]:80", "failed to parse listen: invalid socket address syntax"),
        ("+80", "failed to parse listen: invalid socket address syntax"),
        ("8000,mode=9", "failed to parse mode: invalid digit found in string"),
        ("/tmp/s,local,mode", "failed to parse mode: cannot parse integer from empty string"),
    ],
)
def test_listen_errors(text: str, message: str) -> None:
    error = error_of([f"--listen={text}"])
    assert str(error) == message
    assert error.exit_status == 1


def test_first_bad_listener_is_reported() -> None:
    assert str(error_of(["--listen=8000", "--listen=x"])) == (
        "failed to parse listen: invalid port x"
    )


# --- numeric options --------------------------------------------------------

NUMERIC_OPTIONS = [
    "log-level", "workers", "req-maxconn", "stream-maxconn", "buffer-size",
    "body-buffer-size", "messages-max", "req-timeout", "stream-timeout",
    "compression-message-max", "client-ws-window", "blocks-max", "connection-blocks-max",
]


@pytest.mark.parametrize("option", NUMERIC_OPTIONS)
@pytest.mark.parametrize(
    "text,reason",
    [
        ("x", "invalid digit found in string"),
        ("-1", "invalid digit found in string"),
        ("1.5", "invalid digit found in string"),
        (" 1", "invalid digit found in string"),
        ("1_0", "invalid digit found in string"),
        ("+", "invalid digit found in string"),
        ("", "cannot parse integer from empty string"),
        ("99999999999999999999999", "number too large to fit in target type"),
    ],
)
def test_numeric_option_errors(option: str, text: str, reason: str) -> None:
    error = error_of([f"--{option}={text}"])
    assert str(error) == f"failed to parse {option}: {reason}"


def test_negative_number_with_space() -> None:
    assert str(error_of(["--workers", "-1"])) == (
        "failed to parse workers: invalid digit found in string"
    )


def test_parse_uint_bounds() -> None:
    assert parse_uint("65535", bits=16) == 65535
    with pytest.raises(ValueError, match="too large"):
        parse_uint("65536", bits=16)
    assert parse_uint("777", radix=8) == 0o777
    with pytest.raises(ValueError, match="invalid digit"):
        parse_uint("\u0663")  # Arabic-Indic digit three


def test_first_bad_number_in_condure_order() -> None:
    error = error_of(["--stream-timeout=x", "--workers=y"])
    assert str(error) == "failed to parse workers: invalid digit found in string"


# --- validation -------------------------------------------------------------

@pytest.mark.parametrize("value", ["", "a b", " "])
def test_bad_id(value: str) -> None:
    assert str(error_of([f"--id={value}"])) == (
        "failed to parse id: value cannot be empty or contain a space"
    )


def test_empty_id_with_space_form() -> None:
    assert "failed to parse id" in str(error_of(["--id", ""]))


def test_workers_max() -> None:
    assert parse_args([f"--workers={WORKERS_MAX}", f"--req-maxconn={WORKERS_MAX}"]).workers == 1024
    assert str(error_of([f"--workers={WORKERS_MAX + 1}"])) == (
        "failed to parse workers: value too large"
    )


def test_workers_zero() -> None:
    error = error_of(["--workers=0"])
    assert str(error).startswith("failed to parse workers: ")


def test_total_maxconn() -> None:
    ok = parse_args([f"--stream-maxconn={CONNS_MAX - 100}"])
    assert ok.stream_maxconn + ok.req_maxconn == CONNS_MAX
    assert str(error_of([f"--stream-maxconn={CONNS_MAX - 99}"])) == "total maxconn is too large"


def test_req_maxconn_must_cover_workers() -> None:
    assert str(error_of(["--workers=3", "--req-maxconn=2"])) == "req maxconn must be >= workers"
    assert parse_args(["--workers=3", "--req-maxconn=3"]).req_maxconn == 3


def test_stream_maxconn_must_cover_workers() -> None:
    assert str(error_of(["--workers=3", "--stream-maxconn=2"])) == (
        "stream maxconn must be >= workers"
    )


# pushpin-connmgr's buffer blocks (connmgr.md 3.1, scenario 16 of section 8)


def test_blocks_max_at_least_two_per_stream_connection() -> None:
    assert str(error_of(["--blocks-max=1"])) == "blocks-max is too small"
    assert str(error_of(["--blocks-max=19999"])) == "blocks-max is too small"
    assert parse_args(["--blocks-max=20000"]).blocks_max == 20000
    # computed from the --stream-maxconn given, in either order
    assert str(error_of(["--blocks-max=20", "--stream-maxconn=11"])) == "blocks-max is too small"
    assert parse_args(["--stream-maxconn=10", "--blocks-max=20"]).blocks_max == 20
    # checked without any stream listener too
    assert str(error_of(["--listen=8000,req", "--blocks-max=0"])) == "blocks-max is too small"
    assert str(error_of(["--zserver-stream=ipc://x", "--blocks-max=0"])) == (
        "blocks-max is too small")


def test_connection_blocks_max_at_least_two() -> None:
    for text in ("0", "1"):
        assert str(error_of([f"--connection-blocks-max={text}"])) == (
            "connection-blocks-max is too small")
    assert parse_args(["--connection-blocks-max=2"]).connection_blocks_max == 2
    assert parse_args(["--connection-blocks-max=1000000"]).connection_blocks_max == 1000000


def test_block_options_are_checked_in_connmgr_order() -> None:
    # parsed after body-buffer-size and before messages-max; judged after total maxconn
    assert str(error_of(["--messages-max=x", "--blocks-max=y"])) == (
        "failed to parse blocks-max: invalid digit found in string")
    assert str(error_of(["--blocks-max=y", "--body-buffer-size=x"])) == (
        "failed to parse body-buffer-size: invalid digit found in string")
    assert str(error_of(["--connection-blocks-max=1", "--blocks-max=1"])) == (
        "blocks-max is too small")
    assert str(error_of([f"--stream-maxconn={CONNS_MAX}", "--blocks-max=1"])) == (
        "total maxconn is too large")


def test_buffer_size_must_be_positive() -> None:
    error = error_of(["--buffer-size=0"])
    assert str(error).startswith("failed to parse buffer-size: ")
    assert "> 0" in str(error) or "greater than 0" in str(error)


def test_bad_http_parser() -> None:
    error = error_of(["--http-parser=fast"])
    assert str(error).startswith("failed to parse http-parser: ")
    assert "auto" in str(error) and "httptools" in str(error)


def test_validate_on_constructed_config() -> None:
    Config().validate()
    with pytest.raises(ConfigError, match="req maxconn must be >= workers"):
        Config(workers=2, req_maxconn=1).validate()
    with pytest.raises(ConfigError, match="base spec must be ipc or tcp"):
        Config(listen=(ListenSpec(port=9000),), zclient_stream=("foo://x",)).validate()


# --- argparse errors become one-line ConfigErrors ----------------------------

@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--list", "8000"], "--list"),
        (["--list=8000"], "--list"),
        (["--work=2"], "--work"),
        (["--bogus"], "--bogus"),
        (["foo"], "foo"),
        (["--id"], "--id"),
        (["--listen"], "--listen"),
        (["--id=a", "--id=b"], "--id"),
        (["--compression", "--compression"], "--compression"),
        (["--compression=yes"], "--compression"),
        (["-x"], "-x"),
    ],
)
def test_usage_errors(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    error = error_of(argv)
    assert needle in str(error)
    assert error.exit_status == 2
    out, err = capsys.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize(
    "argv",
    [["--list", "8000"], ["--id"], ["--log-level=x"], ["--listen=8000,foo"], ["--id="],
     ["--workers=3", "--req-maxconn=1"], ["--bogus", "--other"]],
)
def test_every_error_is_one_line(argv: list[str]) -> None:
    message = str(error_of(argv))
    assert message and "\n" not in message


def test_config_error_joins_lines() -> None:
    assert str(ConfigError("a\nb")) == "a b"


# --- version and help -------------------------------------------------------

@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args([flag])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"condure 1.10.1 (python {__version__})\n"


def test_package_version() -> None:
    """Ours is a version of its own; the condure release it implements is apart."""
    assert CONDURE_VERSION == "1.10.1"
    assert re.fullmatch(r"0\.\d+\.\d+", __version__), __version__


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args([flag])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: condure")
    for option in NUMERIC_OPTIONS + ["listen", "zclient-stream", "ipc-file-mode", "http-parser"]:
        assert f"--{option}" in out
    assert "[default: 8192]" in out
    assert "Connection buffer size (two buffers per connection)" in out
    # D18: the inflation limit is said, with its default and what happens past it
    text = " ".join(out.split())
    assert ("--compression-message-max N Largest size a compressed WebSocket message may "
            "inflate to, in bytes; a larger one is closed with 1009 (0: no limit) "
            "[default: 16777216]") in text


def test_client_ws_window_zero_means_buffer_size() -> None:
    """D22: the 101's credits; 0 falls back to --buffer-size, as condure grants."""
    assert parse_args([]).ws_window == 200_000
    assert parse_args(["--client-ws-window", "0"]).ws_window == 8192
    assert parse_args(["--client-ws-window", "0", "--buffer-size", "4096"]).ws_window == 4096
    assert parse_args(["--client-ws-window", "65536"]).ws_window == 65536


# --- pushpin-connmgr's --prometheus and --debug-socket specs -------------------


@pytest.mark.parametrize("text,expected", [
    ("9100", PrometheusSpec("0.0.0.0", 9100)),
    ("127.0.0.1:9100,prefix=x_", PrometheusSpec("127.0.0.1", 9100, prefix="x_")),
    ("[::1]:9100", PrometheusSpec("::1", 9100)),
    ("/run/m.sock,local", PrometheusSpec(unix=UnixSocketSpec("/run/m.sock"))),
    ("/run/m.sock,local,mode=660,user=u,group=g,prefix=pp_",
     PrometheusSpec(unix=UnixSocketSpec("/run/m.sock", 0o660, "u", "g"), prefix="pp_")),
    ("/run/m.sock,prefix=a,local", PrometheusSpec(unix=UnixSocketSpec("/run/m.sock"),
                                                  prefix="a")),
])
def test_prometheus_forms(text: str, expected: PrometheusSpec) -> None:
    assert parse_prometheus(text) == expected
    assert parse_args(["--prometheus", text]).prometheus == text


@pytest.mark.parametrize("text,message", [
    ("9100,foo=1", "invalid param: foo"),
    ("9100,mode=600", "invalid param: mode"),  # the Unix form's
    ("9100,user=u", "invalid param: user"),
    ("/m,local,tls", "invalid param: tls"),
    ("/m,local,mode=9", "invalid mode 9: invalid digit found in string"),
    (",local", "empty path"),
    ("0", "invalid port 0"),
    ("70000", "invalid port 70000"),
])
def test_prometheus_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_args(["--prometheus", text])
    assert str(e.value) == f"failed to parse prometheus: {message}"


@pytest.mark.parametrize("text,expected", [
    ("/tmp/d.sock", UnixSocketSpec("/tmp/d.sock")),
    ("/tmp/d.sock,mode=600,user=u,group=g", UnixSocketSpec("/tmp/d.sock", 0o600, "u", "g")),
])
def test_debug_socket_forms(text: str, expected: UnixSocketSpec) -> None:
    assert parse_debug_socket(text) == expected
    assert parse_args(["--debug-socket", text]).debug_socket == text


@pytest.mark.parametrize("text,message", [
    ("/tmp/d.sock,foo=1", "invalid param: foo"),
    ("/tmp/d.sock,local", "invalid param: local"),
    ("/tmp/d.sock,prefix=x", "invalid param: prefix"),
    ("/tmp/d.sock,mode=", "invalid mode : cannot parse integer from empty string"),
    ("", "empty path"),
])
def test_debug_socket_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_args(["--debug-socket", text])
    assert str(e.value) == f"failed to parse debug-socket: {message}"
    assert e.value.exit_status == 1
