"""`pushpin-connmgr`: condure under the name Pushpin 1.40+ looks for.

Pushpin 1.40 and later start their connection manager as `pushpin-connmgr`
from PATH (there is no setting for it; connmgr.md 7). This entry is condure
with pushpin-connmgr's defaults: `--id connmgr` (so `from`, the SUB
subscription and the ROUTER names are what Pushpin's proxy and handler
expect), its stricter `--listen` parsing, and its program name in `--help`,
whose text Pushpin's legacy runner reads to decide on client mode (it must
mention `--zserver-stream`). Both roles run in one process, as connmgr's do;
every option is condure's.
"""
from __future__ import annotations

import sys

from .__main__ import main
from .options import CONNMGR


def run() -> None:
    sys.exit(main(dialect=CONNMGR))


if __name__ == "__main__":
    run()
