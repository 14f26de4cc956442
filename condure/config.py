"""Command line of condure 1.10.1 -> frozen Config / ListenSpec.

Pure: no sockets, no logging. Option names, defaults, help texts and error
messages follow condure's src/main.rs and src/app.rs; the differences are
deviations D11 (ipc-file-mode is octal, as in 1.10) and D15 (workers default 1)
plus our own `--http-parser`, `--shutdown-timeout`, `--compression-message-max`
(D18), `--access-log` (D21) and `--client-ws-window` (D22), and `--prometheus`,
`--debug-socket`, `--blocks-max` and `--connection-blocks-max` as pushpin-connmgr spells them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any


WORKERS_MAX = 1024
CONNS_MAX = 10_000_000
DEFAULT_LISTEN = "0.0.0.0:8000,stream"
DEFAULT_ZCLIENT_SPEC = "ipc://client"
HTTP_PARSERS = ("auto", "h11", "httptools")
# D18: condure inflates compressed WebSocket messages without a bound; a message
# has no size limit of its own here (it travels in pieces), so this is its own
# option rather than a product of --buffer-size and --messages-max
COMPRESSION_MESSAGE_MAX = 16 * 1024 * 1024
# D22: the credits a client-mode WebSocket handler gets with the 101; Zurl's
# buffer_size, which Pushpin's proxy is written against (condure grants
# --buffer-size, and Pushpin 1.36 stalls a message larger than that)
CLIENT_WS_WINDOW = 200_000

# used by --deny-out-internal (client mode)
PRIVATE_SUBNETS = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)

# exit status condure uses for command-line syntax errors (clap) and for
# everything else
EXIT_USAGE = 2
EXIT_FAILURE = 1


class SpecError(ValueError):
    """A ZeroMQ spec condure cannot use; str(e) is condure's one-line message."""


class ConfigError(Exception):
    """A bad command line; str(e) is one line naming the option.

    `exit_status` is what condure exits with for this kind of error: 2 for
    command-line syntax errors (unknown option, missing value, repeated
    option), 1 for bad values.
    """

    def __init__(self, message: str, exit_status: int = EXIT_FAILURE) -> None:
        super().__init__(" ".join(message.split("\n")).strip())
        self.exit_status = exit_status


@dataclass(frozen=True)
class UnixSocketSpec:
    """A Unix socket path with the mode and owner to give it after the bind."""

    path: str
    mode: int | None = None
    user: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class PrometheusSpec:
    """--prometheus: a TCP address (`addr`, `port`) or, `local`, a Unix socket."""

    addr: str = "0.0.0.0"
    port: int = 0
    unix: UnixSocketSpec | None = None
    prefix: str = ""

    def describe(self) -> str:
        if self.unix is not None:
            return self.unix.path
        return f"[{self.addr}]:{self.port}" if ":" in self.addr else f"{self.addr}:{self.port}"


def _unix_param(opts: dict[str, Any], key: str, arg: str) -> bool:
    """mode=OCTAL, user=U, group=G of a Unix socket spec into `opts`; False for other keys."""
    if key == "mode":
        try:
            opts["mode"] = parse_uint(arg, bits=32, radix=8)
        except ValueError as e:
            raise ValueError(f"invalid mode {arg}: {e}") from None
    elif key in ("user", "group"):
        opts[key] = arg
    else:
        return False
    return True


def parse_prometheus(value: str) -> PrometheusSpec:
    """pushpin-connmgr's --prometheus: `[addr:]port[,prefix=P]` (TCP, a bare port
    is 0.0.0.0) or `PATH,local[,mode=OCTAL][,user=U][,group=G][,prefix=P]`.
    ValueError names what is wrong (`invalid param: K` for an unknown key; mode,
    user and group belong to the Unix form only)."""
    part1, *params = value.split(",")
    local = "local" in params
    opts: dict[str, Any] = {}
    prefix = ""
    for p in params:
        key, _, arg = p.partition("=")
        if key == "prefix":
            prefix = arg
        elif key == "local" or (local and _unix_param(opts, key, arg)):
            pass
        else:
            raise ValueError(f"invalid param: {key}")
    if local:
        if not part1:
            raise ValueError("empty path")
        return PrometheusSpec(unix=UnixSocketSpec(part1, **opts), prefix=prefix)
    addr, _, port = part1.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid port {port}")
    return PrometheusSpec((addr.strip("[]") or "0.0.0.0"), int(port), prefix=prefix)


def parse_debug_socket(value: str) -> UnixSocketSpec:
    """pushpin-connmgr's --debug-socket: `PATH[,mode=OCTAL][,user=U][,group=G]`."""
    path, *params = value.split(",")
    opts: dict[str, Any] = {}
    for p in params:
        key, _, arg = p.partition("=")
        if not _unix_param(opts, key, arg):
            raise ValueError(f"invalid param: {key}")
    if not path:
        raise ValueError("empty path")
    return UnixSocketSpec(path, **opts)


@dataclass(frozen=True)
class ListenSpec:
    """One --listen value. `addr`/`port` for TCP, `path` when `local`."""

    addr: str = "0.0.0.0"
    port: int = 0
    path: str | None = None
    stream: bool = True
    tls: bool = False
    default_cert: str | None = None
    local: bool = False
    http2: bool = True  # stream mode: h2c with prior knowledge (`no-http2` turns it off)
    mode: int | None = None
    user: str | None = None
    group: str | None = None

    def describe(self) -> str:
        """The address as condure logs it: 127.0.0.1:8000, [::1]:8000 or the path."""
        if self.local:
            return self.path or ""
        if ":" in self.addr:
            return f"[{self.addr}]:{self.port}"
        return f"{self.addr}:{self.port}"


@dataclass(frozen=True)
class Config:
    """Everything the command line sets. Times are in seconds.

    `log_level` is condure's --log-level number (see log.level_for).
    The default listener rule is applied by parse_args, not here.
    """

    log_level: int = 2
    id: str = "condure"
    workers: int = 1
    req_maxconn: int = 100
    stream_maxconn: int = 10000
    buffer_size: int = 8192
    body_buffer_size: int = 100000
    # pushpin-connmgr's buffer blocks (connmgr.md 3, blocks.py): None is the
    # default, 2 x stream_maxconn of the value given
    blocks_max: int | None = None
    connection_blocks_max: int = 2
    messages_max: int = 100
    req_timeout: int = 30
    stream_timeout: int = 1800
    listen: tuple[ListenSpec, ...] = ()
    zclient_req: tuple[str, ...] = (DEFAULT_ZCLIENT_SPEC,)
    zclient_stream: tuple[str, ...] = (DEFAULT_ZCLIENT_SPEC,)
    zclient_connect: bool = False
    zserver_req: tuple[str, ...] = ()
    zserver_stream: tuple[str, ...] = ()
    zserver_connect: bool = False
    ipc_file_mode: int = 0
    tls_identities_dir: str = "."
    compression: bool = False
    compression_message_max: int = COMPRESSION_MESSAGE_MAX  # 0: no limit
    client_ws_window: int = CLIENT_WS_WINDOW  # 0: --buffer-size, as condure
    deny_out_internal: bool = False
    no_http2: bool = False  # no listener serves HTTP/2 (each may turn it off with `no-http2`)
    sizes: bool = False
    http_parser: str = "auto"
    # Pushpin's runner kills a service 4 s after SIGTERM and Docker after 10 s:
    # 2 s for responses in flight, then at most ~0.6 s for the cancels
    shutdown_timeout: int = 2
    prometheus: str | None = None
    debug_socket: str | None = None  # pushpin-connmgr's: every log level to its clients
    access_log: bool = False  # D21: one info line per request

    @property
    def ws_window(self) -> int:
        """Client mode: the credits granted with a WebSocket's 101 (D22)."""
        return self.client_ws_window or self.buffer_size

    def validate(self) -> None:
        """Raise ConfigError for values condure rejects (main.rs, then app.rs)."""
        self.validate_args()
        self.validate_limits()
        self.validate_specs()

    def validate_args(self) -> None:
        """The checks condure's main.rs makes before parsing --listen."""
        if not self.id or " " in self.id:
            raise ConfigError("failed to parse id: value cannot be empty or contain a space")
        if self.workers > WORKERS_MAX:
            raise ConfigError("failed to parse workers: value too large")
        if self.workers < 1:
            raise ConfigError("failed to parse workers: value must be at least 1")
        if self.req_maxconn + self.stream_maxconn > CONNS_MAX:
            raise ConfigError("total maxconn is too large")
        # as pushpin-connmgr, whether or not there is a stream listener
        if self.blocks_max is not None and self.blocks_max < 2 * self.stream_maxconn:
            raise ConfigError("blocks-max is too small")
        if self.connection_blocks_max < 2:
            raise ConfigError("connection-blocks-max is too small")
        if self.buffer_size < 1:
            raise ConfigError("failed to parse buffer-size: value must be greater than 0")
        if self.http_parser not in HTTP_PARSERS:
            raise ConfigError(
                f"failed to parse http-parser: invalid value {self.http_parser!r}"
                f" (expected one of {', '.join(HTTP_PARSERS)})"
            )
        if self.prometheus is not None:
            try:
                parse_prometheus(self.prometheus)
            except ValueError as e:
                raise ConfigError(f"failed to parse prometheus: {e}") from None
        if self.debug_socket is not None:
            try:
                parse_debug_socket(self.debug_socket)
            except ValueError as e:
                raise ConfigError(f"failed to parse debug-socket: {e}") from None

    def validate_specs(self) -> None:
        """The ZeroMQ specs, checked here rather than when the sockets are made.

        Only the specs a listener (or client mode) uses, as condure ignores the
        others. A tcp port over 65535 is refused: libzmq would bind the port
        it wraps to (70000 -> 4464) and condure 1.9.1 does so for req specs."""
        stream = any(spec.stream for spec in self.listen)
        req = any(not spec.stream for spec in self.listen)
        try:
            for base in (self.zclient_stream if stream else ()) + self.zserver_stream:
                stream_endpoints(base)
            for option, specs in (("zclient-req", self.zclient_req if req else ()),
                                  ("zserver-req", self.zserver_req)):
                for spec in specs:
                    _check_tcp_port(option, spec)
        except SpecError as e:
            raise ConfigError(str(e)) from None

    def validate_limits(self) -> None:
        """The checks condure's app.rs makes when the app starts."""
        if self.req_maxconn < self.workers:
            raise ConfigError("req maxconn must be >= workers")
        if self.stream_maxconn < self.workers:
            raise ConfigError("stream maxconn must be >= workers")


# ---------------------------------------------------------------------------
# integer parsing with Rust's rules and messages (usize/u16/u32 from_str)

_EMPTY = "cannot parse integer from empty string"
_INVALID = "invalid digit found in string"
_TOO_LARGE = "number too large to fit in target type"


def parse_uint(text: str, bits: int = 64, radix: int = 10) -> int:
    """Parse an unsigned integer like Rust's from_str_radix; ValueError with Rust's message."""
    digits = text[1:] if text.startswith("+") else text
    if not text:
        raise ValueError(_EMPTY)
    allowed = "0123456789"[:radix]
    if not digits or any(c not in allowed for c in digits):
        raise ValueError(_INVALID)
    value = int(digits, radix)
    if value >= 1 << bits:
        raise ValueError(_TOO_LARGE)
    return value


def option_uint(option: str, text: str, bits: int = 64, radix: int = 10) -> int:
    try:
        return parse_uint(text, bits, radix)
    except ValueError as e:
        raise ConfigError(f"failed to parse {option}: {e}") from None


# ---------------------------------------------------------------------------
# ZeroMQ specs


def stream_endpoints(base: str) -> tuple[str, str, str]:
    """Expand a spec base into (PUSH -out, ROUTER -out-stream, SUB -in) endpoints.

    condure's messages; unlike condure, a tcp base whose third port would be
    over 65535 is refused (condure's u16 addition wraps it to port 0)."""
    if base.startswith("ipc://"):
        return base + "-out", base + "-out-stream", base + "-in"
    if base.startswith("tcp://"):
        host, sep, port = base[len("tcp://"):].rpartition(":")
        try:
            p = parse_uint(port, bits=16)
        except ValueError as e:
            raise SpecError(f"error parsing tcp port in base spec: {e}") from None
        if not sep or not host or not 0 < p < 65534:
            raise SpecError(f"error parsing tcp port in base spec: {base}")
        return tuple(f"tcp://{host}:{p + i}" for i in range(3))  # type: ignore[return-value]
    raise SpecError("base spec must be ipc or tcp")


def _check_tcp_port(option: str, spec: str) -> None:
    """A req spec's tcp port must be a port number (or libzmq's `*`, any port)."""
    if not spec.startswith("tcp://"):
        return
    port = spec.rpartition(":")[2]
    if port == "*":
        return
    try:
        parse_uint(port, bits=16)
    except ValueError as e:
        raise SpecError(f"failed to parse {option}: invalid tcp port in {spec}: {e}") from None


# ---------------------------------------------------------------------------
# --listen


def _parse_ip(host: str) -> str:
    """Validate an IPv4 literal or a bracketed IPv6 literal; return it normalised."""
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        inner, pct, scope = inner.partition("%")
        if pct:
            parse_uint(scope, bits=32)
        text = str(ipaddress.IPv6Address(inner))
        return f"{text}%{scope}" if pct else text
    return str(ipaddress.IPv4Address(host))


def _parse_tcp_addr(part1: str) -> tuple[str, int]:
    """`[addr:]port` -> (addr, port); the port is the text after the last ':'."""
    colon = part1.rfind(":")
    port_text = part1[colon + 1 :]
    try:
        port = parse_uint(port_text, bits=16)
    except ValueError:
        raise ConfigError(f"failed to parse listen: invalid port {port_text}") from None
    host = part1[:colon] if colon >= 0 else "0.0.0.0"
    try:
        if port_text.startswith("+"):  # u16 takes a '+', a socket address does not
            raise ValueError(port_text)
        return _parse_ip(host), port
    except ValueError:
        raise ConfigError("failed to parse listen: invalid socket address syntax") from None


# pushpin-connmgr's --listen params (connmgr.md 6): per form, nothing else
_CONNMGR_TCP_PARAMS = ("stream", "req", "tls", "default-cert")
_CONNMGR_LOCAL_PARAMS = ("stream", "req", "local", "mode", "user", "group")


def parse_listen_connmgr(value: str) -> ListenSpec:
    """One --listen value as pushpin-connmgr reads it (the `pushpin-connmgr`
    entry): only the params of its form, an unknown one named by its key;
    `stream` wins over `req` whatever their order."""
    part1, *params = value.split(",")
    keys = [p.partition("=")[0] for p in params]
    allowed = _CONNMGR_LOCAL_PARAMS if "local" in keys else _CONNMGR_TCP_PARAMS
    for key in keys:
        if key not in allowed:
            raise ConfigError(f"failed to parse listen: invalid param: {key}")
    if "stream" in keys:
        params = [p for p in params if p != "req"]
    if "local" not in keys:
        try:
            _parse_tcp_addr(part1)
        except ConfigError:
            raise ConfigError(f"failed to parse listen: invalid TCP address or port: {part1}") \
                from None
    try:
        return parse_listen(",".join([part1, *params]))
    except ConfigError as e:
        if str(e).startswith("failed to parse mode"):
            raise ConfigError(f"failed to parse listen: {e}") from None
        raise


def parse_listen(value: str) -> ListenSpec:
    """Parse one --listen value: `[addr:]port[,param[=value]]...` or `path,local,...`."""
    part1, *params = value.split(",")
    opts: dict[str, Any] = {"stream": True, "tls": False, "local": False, "http2": True}
    for part in params:
        key, _, arg = part.partition("=")
        if key in ("req", "stream"):
            opts["stream"] = key == "stream"
        elif key in ("tls", "local"):
            opts[key] = True
        elif key == "no-http2" and not arg:
            opts["http2"] = False
        elif key == "default-cert":
            opts["default_cert"] = arg
        elif key in ("user", "group"):
            opts[key] = arg
        elif key == "mode":
            opts["mode"] = option_uint("mode", arg, bits=32, radix=8)
        else:
            raise ConfigError(f"failed to parse listen: invalid param: {part}")
    if opts["local"]:
        return ListenSpec(
            path=part1,
            stream=opts["stream"],
            local=True,
            http2=opts["http2"],
            mode=opts.get("mode"),
            user=opts.get("user"),
            group=opts.get("group"),
        )
    addr, port = _parse_tcp_addr(part1)
    return ListenSpec(
        addr=addr,
        port=port,
        stream=opts["stream"],
        tls=opts["tls"],
        default_cert=opts.get("default_cert"),
        http2=opts["http2"],
    )
