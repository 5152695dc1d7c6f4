#!/usr/bin/env bash
# Regenerate the screenshots of docs/dashboard.md (docs/dashboard/*.png): the same
# walk-through as tests/test_dashboard.py (a redis-server on a free port, `stockq run
# --demo`, headless Chromium) with the pictures kept.  Needs Debian's chromium
# (installed here as root, like ops/test.sh does).
#
#   ops/dashboard-screenshots.sh [OUT_DIR]      # default docs/dashboard
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/ops/bootstrap.sh"
if ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium
fi
cd "$root"
exec "$venv/bin/python" -m tests.dashboard_scenario "${1:-docs/dashboard}"
