#!/usr/bin/env bash
# Fuzz every decoder that parses bytes from disk or etcd (targets in fuzz/).
#
#   scripts/fuzz.sh            # each target for 10 s from the committed seeds (CI)
#   scripts/fuzz.sh 3600       # each target for an hour
#   scripts/fuzz.sh 60 fs_open # one target
#
# Needs a nightly toolchain (libFuzzer and sanitizers) and cargo-fuzz; without
# nightly it says so and exits 0, so machines without it still pass CI. A crash,
# a panic, a leak, an allocation over 512 MiB (a length taken on trust) or an
# input that runs longer than 10 s fails the run; the input lands in
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

secs=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fs_decode fs_open etcd_values marker_payload)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: SKIPPED: no nightly toolchain (rustup toolchain install nightly to run it)" >&2
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi
# The etcd crate's build compiles etcd's .proto files.
eval "$(scripts/setup.sh --protoc-only)"

for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/seeds/$t"
    echo "fuzz: $t for ${secs}s" >&2
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$secs" -seed=1 -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=512 -print_final_stats=1 2>&1 |
        grep -E '^(stat::number_of_executed_units|#[0-9]+ +DONE|==[0-9]+==|SUMMARY|.*panicked|Failing input|artifact_prefix)' || true
    if [ "${PIPESTATUS[0]}" -ne 0 ]; then
        echo "fuzz: $t FAILED (see fuzz/artifacts/$t/)" >&2
        exit 1
    fi
done
