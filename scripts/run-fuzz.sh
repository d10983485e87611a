#!/usr/bin/env bash
# Run each libFuzzer target for N seconds on a scratch copy of its corpus.
# Usage: scripts/run-fuzz.sh SECONDS build/fuzz/fuzz_x ...
set -u
secs=$1; shift
status=0
for bin in "$@"; do
    name=$(basename "$bin"); name=${name#fuzz_}
    scratch=$(mktemp -d)
    dict=()
    [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
    log="build/fuzz/$name.log"
    if "$bin" -max_total_time="$secs" -print_final_stats=1 "${dict[@]}" \
        "$scratch" "tests/fuzz/corpus/$name" >"$log" 2>&1; then
        execs=$(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}')
        echo "fuzz $name: ok, ${execs:-?} executions in ${secs}s"
    else
        echo "fuzz $name: FAILED (see $log)"; tail -30 "$log"; status=1
    fi
    rm -rf "$scratch"
done
exit $status
