#!/usr/bin/env bash
# Instructions per unknown-key request of a whole `keytrap serve` process (SQLite), by
# valgrind's callgrind: repeatable where a throughput run on a shared 2-vCPU guest is not.
#
#   services/bench/callgrind/unknown_keys.sh [BINARY]    (default: target/release/keytrap-bench)
#
# BINARY is the benchmark's binary (`cargo build --release -p keytrap-bench`): its `serve`
# subcommand is the `keytrap serve` the trap benchmark runs (API and trap roles), with the
# database URL and listen addresses as arguments.
#
# Runs the server twice under callgrind, for 500 and for 2,500 requests from client.py
# (one keep-alive connection, Binance and Bybit requests in turn, 100 random unknown
# keys), and prints the difference divided by 2,000, so start-up and shutdown cancel out.
# Callgrind runs SHA-256 in software (valgrind has no SHA instructions), so hashing
# weighs more here than on the CPU.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-target/release/keytrap-bench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {
    local n=$1 dir="$work/$1"
    mkdir -p "$dir"
    KEYTRAP_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
        "$bin" serve "sqlite://$dir/db.sqlite" 127.0.0.1:18080 \
        --trap-listen 127.0.0.1:18081 --health-listen 127.0.0.1:18082 >"$dir/log" 2>&1 &
    local pid=$!
    until curl -s -o /dev/null 127.0.0.1:18081/binance/api/v3/ping; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the server under callgrind exited before answering:" >&2
            cat "$dir/log" >&2
            exit 1
        fi
        sleep 0.5
    done
    python3 "$here/client.py" 18081 "$n" >&2
    kill -INT "$pid"
    wait "$pid" || true
    grep -oP 'summary: \K[0-9]+' "$dir/cg.out" | head -1
}
small=$(run 500)
large=$(run 2500)
echo "instructions: $small (500 requests), $large (2500 requests)"
echo "per unknown-key request: $(( (large - small) / 2000 ))"
