#!/usr/bin/env bash
# Run every unit-test binary; print one closing "N passed, N failed" line.
set -u
pass=0 fail=0 failed=()
for t in "$@"; do
    out=$(timeout 300 "$t" 2>&1)
    rc=$?
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
    [ -n "$line" ] || { p=0; f=1; }
    pass=$((pass + p)); fail=$((fail + f))
    if [ $rc -ne 0 ]; then
        failed+=("$(basename "$t")")
        printf '%s\n' "$out" | grep -vE '^ok - ' | tail -40
    fi
    printf '%-28s %s\n' "$(basename "$t")" "${line:-crashed (exit $rc)}"
done
[ ${#failed[@]} -gt 0 ] && echo "failing unit tests: ${failed[*]}"
echo "unit: $pass passed, $fail failed"
[ ${#failed[@]} -eq 0 ]
