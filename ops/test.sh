#!/usr/bin/env bash
# The test command: installs what is missing, then runs the whole suite.
# The tests start their own redis-server processes on free ports.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/ops/bootstrap.sh"
# The dashboard's test (tests/test_dashboard.py) drives Debian's chromium headless,
# installed here as redis-server is by bootstrap.sh (as root); without it that test
# fails saying so.  ops/run.sh does not need it.
if ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium || echo "stockq test: chromium is missing;" \
        "tests/test_dashboard.py will fail" >&2
fi
cd "$root"
exec "$venv/bin/python" -m pytest "$@"
