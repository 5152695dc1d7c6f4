#!/usr/bin/env bash
# Prepare this checkout on a fresh Debian-like machine: Debian's redis-server when it
# is missing (as root), a virtualenv in .venv, and stockq with its dependencies.
# Sourced by ops/run.sh and ops/test.sh; safe to run again (it skips what is done).
#
# Both commands get the same install, the checkout in editable mode with the dev extra
# (pytest, ruff, mypy, ...), under one stamp: running one after the other installs
# nothing again, and a change of pyproject.toml reinstalls once.  A deployment installs
# a wheel without the dev extra instead (ops/install-wheel.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${STOCKQ_VENV:-$root/.venv}
python=${PYTHON:-python3}

apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "stockq bootstrap: please install $* (Debian: apt-get install $*)" >&2
        return 1
    fi
    echo "stockq bootstrap: installing $* from Debian packages" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
fi
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        apt_install python3-venv
        "$python" -m venv "$venv"
    fi
fi
stamp="$venv/.stockq-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    echo "stockq bootstrap: installing Python dependencies into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 \
        | grep -v '^WARNING: Location' >&2 || true
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[dev]" 2>&1 \
        | grep -v '^WARNING: Location' >&2 || true
    "$venv/bin/python" -c "import app, redis, structlog" || {
        echo "stockq bootstrap: the Python install failed" >&2; exit 1; }
    touch "$stamp"
fi
# Bytecode for the checkout's own modules.  A wheel install compiles it (pip does); an
# editable one does not, and where PYTHONDONTWRITEBYTECODE is set (or the checkout is
# read-only) every `stockq` start would compile app/ from source again: ~60 ms of a
# worker's start-up here (docs/benchmarks.md).  Quick when nothing changed.
"$venv/bin/python" -m compileall -q "$root/app" "$root/plugins_bridge" >/dev/null || true
