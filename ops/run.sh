#!/usr/bin/env bash
# The run command: installs what is missing, then runs the all-in-one daemon.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/ops/bootstrap.sh"
exec "$venv/bin/stockq" run "$@"
