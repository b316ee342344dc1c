#!/usr/bin/env bash
# Runs every fuzz target of murmur-rpc for a short while (30 s each by default).
#
# cargo fuzz needs nightly compiler flags; on a stable toolchain RUSTC_BOOTSTRAP=1 unlocks
# them. Install the tool once with `cargo install cargo-fuzz`.
#
# Usage: rpc/fuzz/run-briefly.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-30}"

export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list); do
    echo "fuzzing $target for ${seconds}s"
    cargo fuzz run "$target" -- -max_total_time="$seconds"
done
