# where a handler finds condure's sockets, for an ipc:// or tcp:// spec base
import os

BASE = os.environ.get('CONDURE_ZBASE', 'ipc://client')
# CONDURE_ZBIND=1: bind instead of connect, for condure --zclient-connect (the
# scale-out topology: several condure instances connect to every handler)
BIND = os.environ.get('CONDURE_ZBIND', '') not in ('', '0')

# tcp bases use three ports instead of name suffixes
SERVER_MODE_PORTS = {'-out': 0, '-out-stream': 1, '-in': 2}  # --zclient-stream
CLIENT_MODE_PORTS = {'-in': 0, '-in-stream': 1, '-out': 2}   # --zserver-stream


def endpoint(suffix, base=BASE, ports=SERVER_MODE_PORTS):
    """ipc://X + '-out' -> ipc://X-out; tcp://HOST:P + '-out' -> tcp://HOST:P+offset."""
    if not base.startswith('tcp://'):
        return base + suffix
    host, port = base.rsplit(':', 1)
    return '%s:%d' % (host, int(port) + ports[suffix])


def attach(sock, suffix, base=BASE):
    """Connect `sock` to condure's socket for `suffix`, or bind it with CONDURE_ZBIND=1."""
    addr = endpoint(suffix, base)
    if BIND:
        sock.bind(addr)
    else:
        sock.connect(addr)
