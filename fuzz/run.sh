#!/usr/bin/env bash
# Runs every fuzz target (or those named) for a bounded time on the stable toolchain.
#   fuzz/run.sh [-t SECONDS] [TARGET...]     (default: 20 s each, every target)
# New inputs go to a scratch corpus (fuzz/target/run, or $FUZZ_SCRATCH); the kept corpus (fuzz/corpus/<target>) is only read.
# A crash fails the run and leaves its input under the scratch dir's artifacts/: copy it
# to fuzz/corpus/<target>/ (the proptest twins then replay it in `cargo test`) and fix it.
set -euo pipefail
cd "$(dirname "$0")"
secs=20
if [ "${1:-}" = "-t" ]; then
    secs=$2
    shift 2
fi
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
scratch=${FUZZ_SCRATCH:-$PWD/target/run}
rm -rf "$scratch"
mkdir -p "$scratch"
echo "scratch: $scratch"
cargo fuzz build -s none
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t/corpus" "$scratch/$t/artifacts"
    log="$scratch/$t/fuzz.log"
    if cargo fuzz run -s none "$t" "$scratch/$t/corpus" "corpus/$t" -- \
        -max_total_time="$secs" -artifact_prefix="$scratch/$t/artifacts/" \
        -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
        corp=$(ls "$scratch/$t/corpus" | wc -l)
        echo "$t: ${runs:-?} runs in ${secs} s, $cov, $corp new inputs, no crash"
    else
        echo "$t: FAILED; the input and the log are under $scratch/$t" >&2
        tail -n 40 "$log" >&2
        failed+=("$t")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]}" >&2
    exit 1
fi
