#!/bin/sh
# run_suites.sh SUITE... - run each Check suite (optionally under a prefix such as
# valgrind, from $TT_TEST_PREFIX), show its output, and end with one closing line
# "check: N passed, M failed" that counts the individual checks of all suites.
# A suite that dies before printing Check's summary counts as one failure.
passed=0
failed=0
log=$(mktemp)
for t in "$@"; do
    echo "== $t"
    # shellcheck disable=SC2086
    env $TT_TEST_ENV $TT_TEST_PREFIX "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    summary=$(grep -E '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | tail -n 1)
    if [ -z "$summary" ]; then
        echo "!! $t exited with status $rc before Check's summary"
        failed=$((failed + 1))
        continue
    fi
    counts=$(echo "$summary" | sed -E 's/.*Checks: ([0-9]+), Failures: ([0-9]+), Errors: ([0-9]+).*/\1 \2 \3/')
    total=${counts%% *}
    rest=${counts#* }
    f=${rest%% *}
    e=${rest#* }
    passed=$((passed + total - f - e))
    failed=$((failed + f + e))
    if [ "$rc" -ne 0 ] && [ $((f + e)) -eq 0 ]; then
        echo "!! $t exited with status $rc"
        failed=$((failed + 1))
    fi
done
rm -f "$log"
echo "check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
