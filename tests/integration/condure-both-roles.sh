#!/bin/sh
# Pushpin's runner `condure_bin` for tests/integration/test_pushpin.py: this
# checkout's condure in both roles, replacing Zurl.
#
# The runner starts condure with server-side options only, among them
# --zclient-stream=ipc://RUNDIR/<ipc_prefix>condure. From that base this
# script derives ipc://RUNDIR/<ipc_prefix>zurl and adds the client side:
#   --zserver-stream BASE  -> PULL BASE-in, ROUTER BASE-in-stream, PUB BASE-out
#                             (zurl's in_spec / in_stream_spec / out_spec names,
#                             where pushpin-proxy's zurl_out_specs,
#                             zurl_out_stream_specs and zurl_in_specs point)
#   --zserver-req BASE-req -> ROUTER (Pushpin 1.36 does not use it)
# exec keeps the pid the runner wrote to condure.pid.
set -eu
here=$(cd "$(dirname "$0")" && pwd -P)
condure=$(cd "$here/../.." && pwd -P)/.venv/bin/condure

base=
prev=
for arg in "$@"; do
    case "$arg" in
        --zclient-stream=*) base=${arg#--zclient-stream=} ;;
    esac
    if [ "$prev" = "--zclient-stream" ]; then
        base=$arg
    fi
    prev=$arg
done
case "$base" in
    ipc://*condure) zurl="${base%condure}zurl" ;;
    *) echo "condure-both-roles.sh: no --zclient-stream=ipc://...condure in: $*" >&2
       exit 2 ;;
esac

exec "$condure" "$@" --zserver-stream "$zurl" --zserver-req "$zurl-req"
