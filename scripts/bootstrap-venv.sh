#!/usr/bin/env bash
# Create .venv with a Python >= 3.11 and install ocs into it (editable, with test tools).
# On a fresh Debian machine the venv module may be missing (package python3-venv): as root,
# install it; otherwise say what to install.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "bootstrap: $PYTHON not found; install Python 3.11 or newer (Debian: apt-get install python3)" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: $("$PYTHON" --version 2>&1) is too old; ocs needs Python 3.11 or newer (make PYTHON=python3.12 ...)" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "bootstrap: installing the Debian package for venv"
            minor=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${minor}-venv" >/dev/null \
                || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$VENV"
        else
            echo "bootstrap: '$PYTHON -m venv' failed; install python3-venv (Debian) and retry" >&2
            exit 1
        fi
    fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "bootstrap: $VENV ready ($("$VENV/bin/python" --version))"
