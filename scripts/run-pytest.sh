#!/usr/bin/env bash
# The whole pytest suite in a temporary directory of this run's own (removed after): two suites
# at once (two checkouts, or a developer's run beside CI's) never meet in /tmp/pytest-of-$USER,
# whose mode pytest resets at start under the other run's embedded PostgreSQL.
#
# Test files run in parallel (pytest-xdist, a file's tests together on one worker): most of the
# suite's time is spent waiting on daemons, PostgreSQL, Redis and real peers starting and
# stopping, so on a 2-core machine two workers halve it (10:02 -> 5:10 measured). Each worker
# starts its own PostgreSQL and Redis on free ports. OCS_TEST_WORKERS sets the count (default:
# the machine's logical CPUs, at least 2 and at most 4, since each worker runs its own servers);
# 0 runs every test in this process, one at a time.
set -uo pipefail
cd "$(dirname "$0")/.."
cpus=$(nproc 2>/dev/null || echo 2)
workers=${OCS_TEST_WORKERS:-$((cpus < 2 ? 2 : cpus > 4 ? 4 : cpus))}
if ! [[ $workers =~ ^[0-9]+$ ]]; then
    echo "run-pytest: OCS_TEST_WORKERS must be a whole number (0 = no parallel workers), not '$workers'" >&2
    exit 2
fi
parallel=()
[ "$workers" -gt 0 ] && parallel=(-n "$workers" --dist loadfile)
base=$(mktemp -u /tmp/ocs-pytest.XXXXXX)
echo ".venv/bin/pytest --basetemp=$base ${parallel[*]} $*"
.venv/bin/pytest --basetemp="$base" "${parallel[@]}" "$@"
rc=$?
rm -rf "$base"
exit $rc
