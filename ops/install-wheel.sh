#!/usr/bin/env bash
# Install stockq as a deployment does: build a wheel of the sources, then install that
# wheel (not editable, no dev extra) into a virtualenv, created when it is missing.
#
#   ops/install-wheel.sh VENV [WHEEL_DIR]
#
# The image build (Dockerfile) and the suite's installed-package test
# (tests/test_installed.py) both install this way.  The wheel is built from a copy of
# what it packages (pyproject.toml, README.md, app/, plugins_bridge/) in a temporary
# directory, so no stale build/ or egg-info of a checkout ends up in it and the checkout
# is left as it was.  With WHEEL_DIR, the wheel is kept there; otherwise it is removed.
# PYTHON names the interpreter that creates a missing virtualenv (default python3).
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 VENV [WHEEL_DIR]" >&2
    exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/stockq-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
wheels=${2:-$work/dist}
mkdir -p "$wheels"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
mkdir -p "$work/src"
tar -C "$root" --exclude=__pycache__ -cf - pyproject.toml README.md app plugins_bridge \
    | tar -C "$work/src" -xf -
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
rm -f "$wheels"/stockq-*.whl
"${pip[@]}" wheel -q --no-deps -w "$wheels" "$work/src"
"${pip[@]}" install -q "$wheels"/stockq-*.whl
