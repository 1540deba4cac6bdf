#!/usr/bin/env bash
# RADIUS benchmark, side by side on this machine: ocsd (one process, pinned to CPU 0) and the
# FreeRADIUS baseline (../shared/baseline/freeradius-baseline), same load generator
# (bench/radius_load.py, C engine, pinned to CPU 1), same 10,000 users 4178%07d, same windows
# (64 and 256 requests in flight; each server counted at the window where it answered most).
# Then ocsd with daemon.workers = 2 (SO_REUSEPORT) if this ocsd knows that key.
#
#   bench/run_radius_bench.sh                      # full run: medians of 3 x 10 s (about 8 min,
#                                                  # after waiting up to --wait-quiet 300 s for
#                                                  # the machine to be < 30 % busy)
#   bench/run_radius_bench.sh --runs 1 --seconds 5 --wait-quiet 0   # quick look
#   bench/run_radius_bench.sh --extra-rate 7500    # also p99 at 7,500/s (the issue's target)
#   bench/run_radius_bench.sh --profile            # + py-spy profile of ocsd under load
#   .venv/bin/python bench/radius_front_profile.py # CPU per request of the hot path, no sockets
#   bench/run_radius_bench.sh --skip-ocsd --skip-freeradius --external-port 1812 \
#       --external-pid PID [--external-metrics-port 9812]   # an ocsd someone else started
#   bench/run_radius_bench.sh --help               # every option
#
# Prints a summary table; results.json and summary.txt go to --out DIR (default: the work dir
# under /tmp it prints). Everything it starts is stopped by pid at the end (and the baseline's
# stop.sh is run), also on Ctrl-C. Needs .venv (make venv), gcc, and, as root, installs the
# Debian FreeRADIUS packages if they are missing (--no-install to refuse).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "no $ROOT/.venv: run 'make venv' first" >&2
    exit 2
fi
exec "$ROOT/.venv/bin/python" "$HERE/radius_bench.py" "$@"
