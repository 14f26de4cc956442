"""`condure-pushpin`: condure as Pushpin's server *and* its outgoing client (no Zurl).

Pushpin's runner starts `condure_bin` with server-side options only, among
them `--zclient-stream=ipc://RUNDIR/<ipc_prefix>condure`. Pointing
`condure_bin` at this program instead of `condure` keeps those options and
adds the client side on the endpoints Pushpin's proxy expects from Zurl in
that run directory:

    --zserver-stream ipc://RUNDIR/<ipc_prefix>zurl
        PULL ...zurl-in, ROUTER ...zurl-in-stream, PUB ...zurl-out: where the
        proxy's zurl_out_specs, zurl_out_stream_specs and zurl_in_specs point
        once pushpin.conf says so (README, "Pushpin")
    --zserver-req ipc://RUNDIR/<ipc_prefix>zurl-req
        the REQ interface (Pushpin 1.36 does not use it)

The process replaces itself with `python -m condure` (exec), so the pid the
runner recorded in condure.pid is condure's, and its command line shows every
option condure runs with.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence

PROG = "condure-pushpin"
OPTION = "--zclient-stream"
# the runner's spec ends in the service name; Zurl's sockets share its prefix
SERVER_NAME = "condure"
CLIENT_NAME = "zurl"
EXIT_USAGE = 2


class UsageError(ValueError):
    """The runner's arguments do not say where the client side goes."""


def zclient_stream(argv: Sequence[str]) -> str:
    """The value of the (single) --zclient-stream option, in either form."""
    values = []
    for i, arg in enumerate(argv):
        if arg.startswith(OPTION + "="):
            values.append(arg[len(OPTION) + 1:])
        elif arg == OPTION:
            if i + 1 >= len(argv):
                raise UsageError(f"{OPTION} needs a value")
            values.append(argv[i + 1])
    if len(values) != 1:
        raise UsageError(f"expected one {OPTION}=ipc://...{SERVER_NAME} "
                         f"(as Pushpin's runner passes), got {len(values)}")
    return values[0]


def client_options(argv: Sequence[str]) -> list[str]:
    """The options that add the client side, derived from the runner's arguments."""
    base = zclient_stream(argv)
    if not base.startswith("ipc://") or not base.endswith(SERVER_NAME):
        raise UsageError(f"{OPTION} {base!r} is not ipc://...{SERVER_NAME}: "
                         f"cannot tell where Pushpin's proxy expects Zurl")
    zurl = base[:-len(SERVER_NAME)] + CLIENT_NAME
    return ["--zserver-stream", zurl, "--zserver-req", f"{zurl}-req"]


def command(argv: Sequence[str]) -> list[str]:
    """The condure command line this program execs: this interpreter, condure's
    module, the runner's arguments, then the client side."""
    # -P: the runner's working directory must not shadow the installed package
    return [sys.executable, "-P", "-m", "condure", *argv, *client_options(argv)]


def run() -> None:
    """Console-script entry point: exec condure, or exit 2 with one line on stderr."""
    argv = sys.argv[1:]
    if argv and argv[0] in ("-h", "--help", "-V", "--version"):
        cmd = [sys.executable, "-P", "-m", "condure", argv[0]]  # condure's own
    else:
        try:
            cmd = command(argv)
        except UsageError as e:
            print(f"{PROG}: {e}", file=sys.stderr)
            sys.exit(EXIT_USAGE)
    os.execv(cmd[0], cmd)
