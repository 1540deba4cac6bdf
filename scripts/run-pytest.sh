#!/usr/bin/env bash
# The whole pytest suite in a temporary directory of this run's own (removed after): two suites
# at once (two checkouts, or a developer's run beside CI's) never meet in /tmp/pytest-of-$USER,
# whose mode pytest resets at start under the other run's embedded PostgreSQL.
set -uo pipefail
cd "$(dirname "$0")/.."
base=$(mktemp -u /tmp/ocs-pytest.XXXXXX)
echo ".venv/bin/pytest --basetemp=$base $*"
.venv/bin/pytest --basetemp="$base" "$@"
rc=$?
rm -rf "$base"
exit $rc
