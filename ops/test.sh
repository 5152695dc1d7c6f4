#!/usr/bin/env bash
# The test command: installs what is missing, then runs the whole suite.
# The tests start their own redis-server processes on free ports.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/ops/bootstrap.sh"
cd "$root"
exec "$venv/bin/python" -m pytest "$@"
