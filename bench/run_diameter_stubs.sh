#!/usr/bin/env bash
# The three no-logic Diameter stubs of bench/ side by side under bench/diameter_load.py (the
# client ocsd is measured with): Erlang/OTP `diameter` (bench/diameter_stub.erl), C
# (bench/diameter_stub.c) and Python/uvloop (bench/diameter_stub.py), rounds alternating
# erl, c, py; prints each run and the medians of CPU µs per CCR (every thread of the stub
# process) and CCR/s. Issue 16's Diameter target is ocsd's CPU per CCR against such a stub.
#
#   bench/run_diameter_stubs.sh [ROUNDS=3] [SECONDS=8] [BASE_PORT=39880]
#   ERL_FLAGS="+S 1" bench/run_diameter_stubs.sh      # beam with one scheduler
#   STUBS="erl c" bench/run_diameter_stubs.sh         # a subset
#   STUBS="ocs erl c" bench/run_diameter_stubs.sh     # ocsd itself in the same rounds
#
# "ocs" is ocsd answering from memory (one process; OCS_WORKERS=auto for make run's default) on
# an embedded database under OCS_BENCH_DIR (default /tmp/ocs-diameter-bench), seeded with the
# 10,000 bench accounts on first use (bench/seed_accounts.py); each run first warms its cache
# with 2 s of load, not counted. Its CPU is the daemon's processes', the database's apart.
#
# Needs .venv (make venv), gcc, and for the Erlang stub (bench only, not `make test`):
#   apt-get install -y erlang-base erlang-diameter
# Ports BASE_PORT .. BASE_PORT + 3 * ROUNDS - 1 on 127.0.0.1, one per run. Every stub started is
# stopped by its pid (also on Ctrl-C); each also stops by itself after SECONDS + 60.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
ROUNDS=${1:-3}
SECONDS_PER_RUN=${2:-8}
BASE_PORT=${3:-39880}
STUBS=${STUBS:-erl c py}
PY="$ROOT/.venv/bin/python"
OCS_BENCH_DIR=${OCS_BENCH_DIR:-/tmp/ocs-diameter-bench}
OCS_WORKERS=${OCS_WORKERS:-1}
[ -x "$PY" ] || { echo "no $ROOT/.venv: run 'make venv' first" >&2; exit 2; }
OUT=$(mktemp -d /tmp/diameter-stubs.XXXXXX)
C_STUB="$OUT/diameter_stub"
gcc -O2 -o "$C_STUB" "$HERE/diameter_stub.c"
LIFETIME=$((${SECONDS_PER_RUN%.*} + 60))

STUB_PID=
stop_stub() {
    if [ -n "$STUB_PID" ]; then
        kill "$STUB_PID" 2>/dev/null || true
        wait "$STUB_PID" 2>/dev/null || true
        STUB_PID=
    fi
}
trap stop_stub EXIT INT TERM

wait_listening() {  # port [tenths of a second]: up to 15 s by default
    for _ in $(seq "${2:-150}"); do
        if "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 0.2).close()" "$1" 2>/dev/null; then
            return 0
        fi
        kill -0 "$STUB_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

ocs_config() {  # port: a config for ocsd on the bench database, listening on port
    local config="$OCS_BENCH_DIR/ocs-$1.toml"
    local workers=$OCS_WORKERS
    [ "$workers" = auto ] && workers='"auto"'
    printf '%s\n' "[daemon]" "lock_file = \"$OCS_BENCH_DIR/ocsd.lock\"" "workers = $workers" \
        "[log]" 'level = "warning"' "[database]" "embedded_dir = \"$OCS_BENCH_DIR/pg\"" \
        "[metrics]" 'listen = "127.0.0.1:0"' "[diameter]" "enabled = true" \
        "listen = [\"127.0.0.1:$1\"]" "[[diameter.peers]]" 'origin_host = "*.localdomain"' \
        'address = "127.0.0.1"' >"$config"
    echo "$config"
}

if [[ " $STUBS " == *" ocs "* ]]; then
    mkdir -p "$OCS_BENCH_DIR"
    if [ ! -e "$OCS_BENCH_DIR/seeded" ]; then
        "$PY" "$HERE/seed_accounts.py" --config "$(ocs_config "$BASE_PORT")" >/dev/null
        touch "$OCS_BENCH_DIR/seeded"
    fi
fi

echo "machine: $(nproc) CPUs, $(uptime | sed 's/.*load average/load average/')"
command -v erl >/dev/null && echo "beam: ERL_FLAGS='${ERL_FLAGS:-}'"
port=$BASE_PORT
for round in $(seq "$ROUNDS"); do
    for stub in $STUBS; do
        case $stub in
            erl) escript "$HERE/diameter_stub.erl" 127.0.0.1 "$port" "$LIFETIME" >"$OUT/$stub-$round.stub" 2>&1 & ;;
            c) "$C_STUB" 127.0.0.1 "$port" "$LIFETIME" >"$OUT/$stub-$round.stub" 2>&1 & ;;
            py) "$PY" "$HERE/diameter_stub.py" 127.0.0.1 "$port" "$LIFETIME" >"$OUT/$stub-$round.stub" 2>&1 & ;;
            ocs) "$ROOT/.venv/bin/ocsd" --config "$(ocs_config "$port")" >"$OUT/$stub-$round.stub" 2>&1 & ;;
            *) echo "unknown stub $stub (ocs, erl, c, py)" >&2; exit 2 ;;
        esac
        STUB_PID=$!
        if ! wait_listening "$port" 600; then
            echo "$stub stub did not listen on $port:" >&2
            cat "$OUT/$stub-$round.stub" >&2
            exit 1
        fi
        if [ "$stub" = ocs ]; then  # warm its cache: the stubs have none
            "$PY" "$HERE/diameter_load.py" --port "$port" --users 10000 --duration-s 2 >/dev/null
        fi
        "$PY" "$HERE/diameter_load.py" --port "$port" --users 10000 --duration-s "$SECONDS_PER_RUN" \
            --server-pid "$STUB_PID" >"$OUT/$stub-$round.load"
        stop_stub
        echo "--- round $round, $stub stub (port $port)"
        head -1 "$OUT/$stub-$round.stub"
        cat "$OUT/$stub-$round.load"
        port=$((port + 1))
    done
done
echo "load average after: $(uptime | sed 's/.*load average: //')"
"$PY" - "$OUT" $STUBS <<'PYEOF'
import pathlib, re, statistics, sys
out = pathlib.Path(sys.argv[1])
print(f"\nmedians ({out}):")
for stub in sys.argv[2:]:
    rates, cpus, bad = [], [], 0
    for load in sorted(out.glob(f"{stub}-*.load")):
        text = load.read_text()
        rates.append(float(re.search(r"CCR/s\s+(\d+)", text).group(1)))
        cpus.append(float(re.search(r"server CPU .*?([\d.]+) µs per CCR", text).group(1)))
        bad += sum(int(n) for code, n in re.findall(r"CCR-[IT] (-?\d+): (\d+)", text) if code != "2001")
    print(f"  {stub:4s} {statistics.median(cpus):6.1f} µs CPU per CCR   "
          f"{statistics.median(rates):8.0f} CCR/s   runs {len(rates)}   answers not 2001: {bad}   "
          f"(µs {cpus}, CCR/s {rates})")
PYEOF
