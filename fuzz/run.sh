#!/usr/bin/env bash
# Builds the trap's fuzz targets and runs each for a bounded time. Exits non-zero when
# a target crashes (the input is kept under fuzz/artifacts/<target>/).
#
#   FUZZ_SECONDS   total fuzzing time, split evenly over the targets (default 60)
#   FUZZ_TARGETS   space-separated subset (default: every target)
#
# The machine has a stable toolchain only: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass the
# nightly-only flags (-Z sanitizer, -C passes=sancov) to it. No sanitizer: the trap has
# no unsafe code (`unsafe_code = "forbid"`), so ASan would only slow the build and runs;
# overflow checks and debug assertions stay on (cargo-fuzz's default).
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

total=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"request form binance_signed coinbase_jwt"}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

# fuzz/ is its own workspace: its build lands in fuzz/target, apart from the main one.
cargo fuzz build -s none

n=$(wc -w <<<"$targets")
each=$(( total / n ))
[ "$each" -ge 1 ] || each=1
status=0
for t in $targets; do
  # New inputs go to a scratch corpus (gitignored); the committed seeds are read only.
  work="target/corpus/$t"
  mkdir -p "$work" "artifacts/$t"
  echo "==== fuzz $t for ${each}s"
  if ! cargo fuzz run -s none "$t" "$work" "corpus/$t" -- \
      -max_total_time="$each" -max_len=70000 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1; then
    echo "FUZZ FAILURE: $t (reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -s none $t fuzz/artifacts/$t/<file>)"
    status=1
  fi
done
exit "$status"
