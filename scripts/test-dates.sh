#!/usr/bin/env bash
# `make test-dates`: the date-sensitive tests (marker `dates`) under a faked clock, at instants
# where months, days, offsets and years change, each with another machine time zone.
# libfaketime (Debian package faketime) fakes the clock of this process tree, the embedded
# PostgreSQL included, starting at the instant given and letting it run.
#
# Runs the instants DATES_JOBS at a time (default 3; each has its own embedded PostgreSQL, and
# most of a run is waiting on it); prints one line per instant and exits non-zero if any
# failed (its output is printed then).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=${PYTEST:-.venv/bin/pytest}
JOBS=${DATES_JOBS:-3}

if ! command -v faketime >/dev/null 2>&1; then
    echo "test-dates: faketime is missing (Debian package faketime; make test installs it)" >&2
    exit 1
fi

# "instant in UTC|machine time zone|what it is"
INSTANTS=(
    "2027-01-31 23:30:00|UTC|the last half hour of January in UTC, February in Zurich"
    "2027-03-28 00:30:00|Europe/Zurich|the night summer time starts in Zurich"
    "2027-03-14 09:30:00|America/Los_Angeles|the night summer time starts in Los Angeles"
    "2027-10-31 00:30:00|Europe/Zurich|the night summer time ends in Zurich"
    "2027-11-07 08:30:00|America/Los_Angeles|the night summer time ends in Los Angeles"
    "2028-02-29 12:00:00|Pacific/Kiritimati|a leap day (UTC+14 on the machine)"
    "2027-12-31 23:59:30|UTC|the last half minute of the year"
    "2028-02-29 23:59:50|Etc/GMT+12|the end of a leap day (UTC-12 on the machine)"
)

# Only the files that hold such tests: collecting the whole suite costs seconds per instant.
mapfile -t FILES < <(grep -rlE 'mark\.dates' tests --include='test_*.py' | sort)
if [ ${#FILES[@]} -eq 0 ]; then
    echo "test-dates: no test is marked 'dates'" >&2
    exit 1
fi

work=$(mktemp -d /tmp/ocs-test-dates.XXXXXX)
trap 'rm -rf "$work"' EXIT
run_one() {
    local n=$1 instant=$2 zone=$3
    TZ=$zone CI=${CI:-} faketime "$instant" "$PYTEST" -q -p no:cacheprovider -m dates \
        --basetemp="$work/t$n" "${FILES[@]}" >"$work/out$n" 2>&1
    echo $? >"$work/rc$n"
}

pids=()
for n in "${!INSTANTS[@]}"; do
    IFS='|' read -r instant zone _what <<<"${INSTANTS[$n]}"
    run_one "$n" "$instant" "$zone" &
    pids+=($!)
    if (( ${#pids[@]} >= JOBS )); then
        wait "${pids[0]}"
        pids=("${pids[@]:1}")
    fi
done
wait

failed=0
for n in "${!INSTANTS[@]}"; do
    IFS='|' read -r instant zone what <<<"${INSTANTS[$n]}"
    rc=$(cat "$work/rc$n" 2>/dev/null || echo 99)
    summary=$(tail -n 1 "$work/out$n")
    if [ "$rc" = 0 ]; then
        printf 'test-dates: %s UTC, TZ=%s (%s): %s\n' "$instant" "$zone" "$what" "$summary"
    else
        failed=1
        printf 'test-dates: FAILED at %s UTC, TZ=%s (%s)\n' "$instant" "$zone" "$what"
        cat "$work/out$n"
    fi
done
exit $failed
