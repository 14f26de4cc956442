"""condure's command line -> a frozen Config (config.py).

Option names, defaults, help texts and error messages follow condure's
src/main.rs; each option may be given once, and every error is a
ConfigError carrying condure's exit status. Pure: no sockets, no logging.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from . import VERSION
from .config import (CLIENT_WS_WINDOW, COMPRESSION_MESSAGE_MAX, DEFAULT_LISTEN,
                     DEFAULT_ZCLIENT_SPEC, EXIT_USAGE, HTTP_PARSERS, Config, ConfigError,
                     ListenSpec, option_uint, parse_listen, parse_listen_connmgr)


@dataclass(frozen=True)
class Dialect:
    """Whose command line this is: condure's, or pushpin-connmgr's (the
    `pushpin-connmgr` entry: its program name, its default --id, its stricter
    --listen; every option is the same)."""

    prog: str
    default_id: str
    parse_listen: Callable[[str], ListenSpec]
    module: str  # what `python -m` runs for it (the workers of --workers N)


CONDURE = Dialect("condure", "condure", parse_listen, "condure")
CONNMGR = Dialect("pushpin-connmgr", "connmgr", parse_listen_connmgr, "condure.connmgr")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that raises ConfigError instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message, EXIT_USAGE)


def _reject_repeat(namespace: argparse.Namespace, option: str) -> None:
    seen: set[str] = namespace.__dict__.setdefault("_seen_options", set())
    if option in seen:
        raise ConfigError(f"the argument '{option}' cannot be used multiple times", EXIT_USAGE)
    seen.add(option)


class _StoreOnce(argparse.Action):
    """Single-valued option; giving it twice is an error (as clap does)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        _reject_repeat(namespace, self.option_strings[0])
        setattr(namespace, self.dest, values)


class _FlagOnce(argparse.Action):
    """Boolean flag; giving it twice is an error (as clap does)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        _reject_repeat(namespace, self.option_strings[0])
        setattr(namespace, self.dest, True)


# (option, kind, metavar, default, help) in condure's order; kind is
# "uint" (non-negative integer), "str", "list" (repeatable) or "flag".
# A list option's default is replaced, not extended, by the user's values.
_OPTIONS: tuple[tuple[str, str, str, str | None, str], ...] = (
    ("log-level", "uint", "N", "2", "Log level"),
    ("id", "str", "ID", "condure", "Instance ID"),
    ("workers", "uint", "N", "1", "Number of worker processes"),
    ("req-maxconn", "uint", "N", "100", "Maximum number of concurrent connections in req mode"),
    ("stream-maxconn", "uint", "N", "10000",
     "Maximum number of concurrent connections in stream mode"),
    ("buffer-size", "uint", "N", "8192", "Connection buffer size (two buffers per connection)"),
    ("body-buffer-size", "uint", "N", "100000", "Body buffer size for connections in req mode"),
    # pushpin-connmgr's; blocks-max has no fixed default (2 x --stream-maxconn)
    ("blocks-max", "uint", "N", None,
     "Maximum number of buffer blocks in stream mode (minimum 2*maxconn)"),
    ("connection-blocks-max", "uint", "N", "2",
     "Maximum number of buffer blocks per connection in stream mode (minimum 2)"),
    ("messages-max", "uint", "N", "100",
     "Maximum number of queued WebSocket messages per connection"),
    ("req-timeout", "uint", "N", "30", "Connection timeout in req mode (seconds)"),
    ("stream-timeout", "uint", "N", "1800", "Connection timeout in stream mode (seconds)"),
    ("listen", "list", "[addr:]port[,params...]", DEFAULT_LISTEN,
     "Port to listen on (the default applies only when no --zserver-* option is given)"),
    ("zclient-req", "list", "spec", DEFAULT_ZCLIENT_SPEC, "ZeroMQ client REQ spec"),
    ("zclient-stream", "list", "spec-base", DEFAULT_ZCLIENT_SPEC,
     "ZeroMQ client PUSH/ROUTER/SUB spec base"),
    ("zclient-connect", "flag", "", None, "ZeroMQ client sockets should connect instead of bind"),
    ("zserver-req", "list", "spec", None, "ZeroMQ server REQ spec"),
    ("zserver-stream", "list", "spec-base", None, "ZeroMQ server PULL/ROUTER/PUB spec base"),
    ("zserver-connect", "flag", "", None, "ZeroMQ server sockets should connect instead of bind"),
    ("ipc-file-mode", "str", "octal", None, "Permissions for ZeroMQ IPC binds"),
    ("tls-identities-dir", "str", "directory", ".",
     "Directory containing certificates and private keys"),
    ("compression", "flag", "", None, "Allow compression to be used"),
    ("compression-message-max", "uint", "N", str(COMPRESSION_MESSAGE_MAX),
     "Largest size a compressed WebSocket message may inflate to, in bytes; a larger one "
     "is closed with 1009 (0: no limit)"),
    ("client-ws-window", "uint", "N", str(CLIENT_WS_WINDOW),
     "Client mode: bytes a WebSocket handler may send towards the origin before condure "
     "grants more, also the most condure buffers for it (0: --buffer-size)"),
    ("deny-out-internal", "flag", "", None,
     "Block outbound connections to local/internal IP address ranges"),
    ("sizes", "flag", "", None, "Prints sizes of tasks and other objects"),
    ("no-http2", "flag", "", None,
     "Serve no HTTP/2 (h2c with prior knowledge) on stream listeners; one listener: "
     "its `no-http2` param"),
    ("http-parser", "str", "|".join(HTTP_PARSERS), "auto", "HTTP/1 request parser"),
    ("prometheus", "str", "[addr:]port[,prefix=P] | path,local[,params...]", None,
     "Address/port or Unix socket to serve Prometheus metrics on"),
    ("debug-socket", "str", "path[,mode=OCTAL][,user=U][,group=G]", None,
     "Unix socket streaming every log level to its clients while any is connected"),
    ("shutdown-timeout", "uint", "N", "2",
     "Seconds responses in flight get to finish on SIGTERM/SIGINT"),
    ("access-log", "flag", "", None,
     "Log one line per request at info level: peer, method, uri, status, body bytes, "
     "duration and who answered"),
)


def _help(text: str, default: str | None) -> str:
    return text if default is None else f"{text} [default: {default}]"


def _add_option(parser: argparse.ArgumentParser, name: str, kind: str, metavar: str,
                default: str | None, text: str) -> None:
    flag, help_text = f"--{name}", _help(text, default)
    if kind == "flag":
        parser.add_argument(flag, action=_FlagOnce, help=help_text)
    elif kind == "list":
        parser.add_argument(flag, metavar=metavar, action="append", help=help_text)
    else:
        parser.add_argument(flag, metavar=metavar, default=default, action=_StoreOnce,
                            help=help_text)


def build_parser(dialect: Dialect = CONDURE) -> argparse.ArgumentParser:
    """The argparse parser for condure's options (values are kept as strings)."""
    parser = _Parser(prog=dialect.prog, description="HTTP/WebSocket connection manager",
                     allow_abbrev=False, add_help=False)
    parser.add_argument("-h", "--help", action="help", help="Print help information")
    parser.add_argument("-V", "--version", action="version", version=VERSION,
                        help="Print version information")
    for name, kind, metavar, default, text in _OPTIONS:
        if name == "id":
            default = dialect.default_id
        _add_option(parser, name, kind, metavar, default, text)
    return parser


def _numbers(ns: argparse.Namespace) -> dict[str, int]:
    """Parse the "uint" options in condure's order (the first bad one is reported); one
    without a default that was not given is left out (Config's default applies)."""
    names = [name.replace("-", "_") for name, kind, _, _, _ in _OPTIONS if kind == "uint"]
    return {name: option_uint(name.replace("_", "-"), getattr(ns, name)) for name in names
            if getattr(ns, name) is not None}


def _listen_values(ns: argparse.Namespace) -> list[str]:
    if ns.listen:
        return list(ns.listen)
    if ns.zserver_req or ns.zserver_stream:
        return []
    return [DEFAULT_LISTEN]


def parse_args(argv: Sequence[str], dialect: Dialect = CONDURE) -> Config:
    """Parse condure's command line (without the program name) into a validated Config.

    Raises ConfigError for any bad input; SystemExit(0) for -h/--help and -V/--version.
    """
    ns = build_parser(dialect).parse_args(list(argv))
    numbers = _numbers(ns)
    mode_text = ns.ipc_file_mode if ns.ipc_file_mode is not None else "0"
    ipc_file_mode = option_uint("ipc-file-mode", mode_text, bits=32, radix=8)
    config = Config(
        id=ns.id,
        **numbers,
        listen=(),
        zclient_req=tuple(ns.zclient_req or (DEFAULT_ZCLIENT_SPEC,)),
        zclient_stream=tuple(ns.zclient_stream or (DEFAULT_ZCLIENT_SPEC,)),
        zclient_connect=ns.zclient_connect,
        zserver_req=tuple(ns.zserver_req or ()),
        zserver_stream=tuple(ns.zserver_stream or ()),
        zserver_connect=ns.zserver_connect,
        ipc_file_mode=ipc_file_mode,
        tls_identities_dir=ns.tls_identities_dir,
        compression=ns.compression,
        deny_out_internal=ns.deny_out_internal,
        no_http2=ns.no_http2,
        sizes=ns.sizes,
        http_parser=ns.http_parser,
        prometheus=ns.prometheus,
        debug_socket=ns.debug_socket,
        access_log=ns.access_log,
    )
    config.validate_args()
    listen = tuple(dialect.parse_listen(v) for v in _listen_values(ns))
    config = replace(config, listen=listen)
    config.validate_limits()
    config.validate_specs()
    return config
