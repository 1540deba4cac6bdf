#!/usr/bin/env bash
# What `make run` needs beyond .venv: redis-server, which the daemon starts itself (on a Unix
# socket under var/, no TCP port, no persistence) so its workers, one per core, share running
# sessions and holds. Installed when missing and this is root on Debian; otherwise the daemon
# runs one process and says why. Never fatal: the demo runs either way.
set -uo pipefail
command -v redis-server >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "run deps: installing redis-server (Debian) so the daemon's workers can share holds"
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; then
        echo "run deps: Debian may also have started its own redis-server service on" \
             "127.0.0.1:6379; ocs does not use it (systemctl disable --now redis-server to stop it)"
        exit 0
    fi
    echo "run deps: could not install redis-server; the daemon will run one process" >&2
else
    echo "run deps: no redis-server (apt-get install redis-server as root): the daemon runs" \
         "one process instead of one worker per core" >&2
fi
exit 0
