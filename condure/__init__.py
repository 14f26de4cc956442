"""condure (Python): a ZeroMQ/ZHTTP connection manager, a drop-in for Fanout's Condure."""

__version__ = "0.11.0"  # this package's own version
# the condure release whose command line, sockets and ZHTTP messages it implements
CONDURE_VERSION = "1.10.1"
# what `--version` and the `starting...` line say: an operator can tell it from
# the Rust binary, and a tool reading the first two words still sees condure's
VERSION = f"condure {CONDURE_VERSION} (python {__version__})"
