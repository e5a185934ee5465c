#!/usr/bin/env bash
# Starts a real `keytrap serve` (debug build) on a fresh database and runs end-to-end
# checks against it. Usage: e2e/run.sh PYTHON [sqlite|postgres] [exchange...]
# The script run is E2E_SCRIPT (default e2e/ccxt_e2e.py; e2e/sdk_e2e.py runs the
# exchanges' own SDKs). For postgres, KEYTRAP_E2E_POSTGRES_URL names a database the run
# may fill.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$1; BACKEND=${2:-sqlite}; shift $(($# < 2 ? $# : 2))
SCRIPT=${E2E_SCRIPT:-e2e/ccxt_e2e.py}
BIN=target/debug/keytrap
[ -x "$BIN" ] || cargo build -q -p keytrap
DIR=$(mktemp -d)
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API_PORT=$(free_port); TRAP_PORT=$(free_port)
export KEYTRAP_ADMIN_TOKEN="keytrap_e2e_$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export KEYTRAP_MASTER_KEY=$("$BIN" gen-master-key)
if [ "$BACKEND" = postgres ]; then
  export KEYTRAP_DATABASE_URL=${KEYTRAP_E2E_POSTGRES_URL:?set KEYTRAP_E2E_POSTGRES_URL}
else
  export KEYTRAP_DATABASE_URL="sqlite://$DIR/keytrap.db"
fi
KEYTRAP_API_LISTEN=127.0.0.1:$API_PORT KEYTRAP_TRAP_LISTEN=127.0.0.1:$TRAP_PORT \
  "$BIN" serve > "$DIR/stdout.log" 2> "$DIR/stderr.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1 && break
  kill -0 $PID 2>/dev/null || { cat "$DIR/stderr.log"; exit 1; }
  sleep 0.2
done
KEYTRAP_URL=http://127.0.0.1:$API_PORT KEYTRAP_TOKEN=$KEYTRAP_ADMIN_TOKEN \
KEYTRAP_TRAP_URL=http://127.0.0.1:$TRAP_PORT "$PY" "$SCRIPT" "$@" || {
  echo "---- keytrap stderr (last 40 lines)"; tail -40 "$DIR/stderr.log"; exit 1; }
