"""Command-line entry point: ``python -m condure`` and the ``condure`` script."""
from __future__ import annotations

import gc
import logging
import os
import signal
import sys

import gevent
from gevent.event import Event

from . import VERSION
from . import log as clog
from . import private
from . import workers
from .app import App, StartupError, WorkerInfo, check_identities_dir
from .server.parser import httptools
from .config import Config, ConfigError
from .options import CONDURE, Dialect, parse_args

GC_THRESHOLD = 20000  # allocations between young-generation collections (Python's default: 700)

log = logging.getLogger("condure")


def unsupported(cfg: Config) -> list[str]:
    """Options that parse but whose feature is not built yet."""
    out = []
    if cfg.workers > 1 and (cfg.zserver_req or cfg.zserver_stream):
        out.append("client mode (--zserver-*) with --workers greater than 1")
    if cfg.http_parser == "httptools" and httptools is None:
        out.append("--http-parser httptools (httptools is not installed)")
    return out


def main(argv: list[str] | None = None, dialect: Dialect = CONDURE) -> int:
    clog.setup(clog.level_for(2))
    try:
        cfg = parse_args(sys.argv[1:] if argv is None else argv, dialect)
    except ConfigError as e:
        log.error("%s", e)
        return e.exit_status  # 2 for command-line syntax, 1 for bad values (as condure)
    clog.setup(clog.level_for(cfg.log_level))
    missing = unsupported(cfg)
    if missing:
        log.error("%s is not supported yet", missing[0])
        return 1
    try:
        check_identities_dir(cfg)  # before any worker starts: one line, exit 1
    except StartupError as e:
        log.error("%s", e)
        return 1
    if cfg.sizes:
        return print_sizes(cfg)
    worker = os.environ.get(workers.ENV)
    if not worker:  # the process the operator started speaks for its workers
        private.report()
    if worker:
        workers.die_with_parent()
        info = WorkerInfo.decode(worker)
        return serve(workers.worker_config(cfg, info.count), info)
    if cfg.workers > 1:
        return workers.run(cfg, sys.argv[1:] if argv is None else argv, dialect.module)
    return serve(cfg)


def print_sizes(cfg: Config) -> int:
    """--sizes: measure what a connection costs with these options, print, exit."""
    from .sizes import report

    try:
        text = report(cfg)
    except (StartupError, OSError, RuntimeError) as e:
        log.error("sizes: %s", e)
        return 1
    sys.stdout.write(text)
    return 0


def serve(cfg: Config, worker: WorkerInfo | None = None) -> int:
    log.info("starting... %s", VERSION)
    # handlers first: a SIGTERM that arrives while the sockets are being bound
    # ends the run gracefully once they are (exit 0), instead of killing it
    stop = Event()

    def on_signal() -> None:
        if stop.is_set():
            if worker is not None:
                # the parent counts the operator's signals (a second one kills
                # us): a signal to the whole process group (Ctrl-C, systemd)
                # reaches a worker twice, directly and forwarded by the parent
                return
            os._exit(1)  # a second signal: no more waiting
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        gevent.signal_handler(sig, on_signal)
    gevent.signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP ignored"))
    app = App(cfg, worker)
    try:
        app.start()
    except StartupError as e:
        log.error("%s", e)
        app.stop()
        return 1
    log.info("started")
    tune_gc()
    if worker is not None:
        workers.report_ready(worker.ready_fd)  # once a SIGTERM would stop it gracefully
    stop.wait()
    log.info("stopping...")
    app.shutdown(float(cfg.shutdown_timeout))
    log.info("stopped")
    return 0


def tune_gc() -> None:
    """Connections free their objects by reference counting (no cycles on the
    request path), so the cyclic collector has little to find: run it less
    often, and never again over what startup loaded (modules, config)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
