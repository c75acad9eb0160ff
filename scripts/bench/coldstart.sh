#!/bin/bash
# Cold start of `earshot dev` (issue 15): seconds from its start to the first 5-second upload
# succeeded, and to /readyz 200. Run it on a fresh clone with the NUMBA_CACHE_DIR to test:
#
#   git clone . /tmp/fresh && cd /tmp/fresh
#   NUMBA_CACHE_DIR=/tmp/cache-empty scripts/bench/coldstart.sh CLIP.ogg        # no warm-up
#   NUMBA_CACHE_DIR=/tmp/cache-warm .venv/bin/earshot warmup                     # make install
#   NUMBA_CACHE_DIR=/tmp/cache-warm scripts/bench/coldstart.sh CLIP.ogg
#
# PYTHON defaults to the checkout's .venv; the checkout itself goes first on PYTHONPATH.
set -euo pipefail
clip=${1:?usage: coldstart.sh CLIP [PORT]}
port=${2:-18741}
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
data=$(mktemp -d /tmp/earshot-coldstart.XXXX)
export PYTHONPATH=$repo
started=$(date +%s.%N)
since() { echo "$(date +%s.%N) - $started" | bc; }
EARSHOT_DATA_DIR=$data/var "$python" -m earshot dev --port "$port" >"$data/dev.log" 2>&1 &
dev=$!
trap 'kill -TERM $dev 2>/dev/null; wait $dev 2>/dev/null; rm -rf "$data"' EXIT
until curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; do sleep 0.05; done
echo "API answers after $(since) s"
id=$(curl -s -F "file=@$clip" -F priority=interactive "http://127.0.0.1:$port/v1/analyses" |
  "$python" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
status=queued
until [ "$status" = succeeded ] || [ "$status" = failed ]; do
  sleep 0.05
  status=$(curl -s "http://127.0.0.1:$port/v1/analyses/$id" |
    "$python" -c 'import json, sys; print(json.load(sys.stdin)["status"])')
done
echo "first upload $status after $(since) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; do
  sleep 0.1
done
echo "/readyz 200 after $(since) s"
