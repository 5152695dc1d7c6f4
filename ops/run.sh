#!/usr/bin/env bash
# The run command: installs what is missing, then runs the all-in-one daemon.
#
# Development provisioning, said out loud: when STOCKQ_REDIS_URL is unset and nothing
# answers on 127.0.0.1:6379, it starts a local redis-server there (append-only file in
# $STOCKQ_DATA_DIR/redis) so that a fresh machine runs with one command; when one
# answers there already, it says that it reuses it.  stockq itself
# never falls back: with STOCKQ_REDIS_URL set to an unreachable Redis it exits with 3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/ops/bootstrap.sh"
answers() {
    "$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1', 6379), 1)" \
        2>/dev/null
}
if [ -n "${STOCKQ_REDIS_URL:-}" ] || [ -n "${REDIS_HOST:-}" ]; then
    echo "ops/run.sh: using the Redis that STOCKQ_REDIS_URL (or REDIS_HOST) names;" \
         "ops/run.sh starts none" >&2
elif answers; then
    echo "ops/run.sh: reusing the Redis already running on 127.0.0.1:6379 (database 0;" \
         "stockq keeps its keys under its namespace, STOCKQ_NAMESPACE, default 'stock'," \
         "and --demo uses 'demo')" >&2
else
    data="${STOCKQ_DATA_DIR:-$HOME/.local/share/stockq}/redis"
    mkdir -p "$data"
    echo "ops/run.sh: no Redis on 127.0.0.1:6379 and STOCKQ_REDIS_URL is unset;" \
         "starting a local redis-server (data and log in $data)" >&2
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir "$data" \
        --appendonly yes --logfile "$data/redis.log"
    for _ in $(seq 50); do
        answers && break
        sleep 0.1
    done
fi
exec "$venv/bin/stockq" run "$@"
