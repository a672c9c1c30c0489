#!/bin/sh
# run_suites.sh SUITE... - run each Check suite (optionally under a prefix such as
# valgrind, from $TT_TEST_PREFIX), show its output, and end with one closing line
# "check: N passed, M failed" that counts the individual checks of all suites.
# A suite that dies before printing Check's summary counts as one failure.
# Every failure is repeated just above the closing line, so that the last lines of a
# long log (all that a CI page may show) say what failed, not only how many.
# A test case that sets no timeout of its own gets 60 s, not Check's 4 s: a few suites
# take 2-3 s a case under ASan, and a slow or busy machine must not turn that into a
# failure (a hung test is still stopped).
CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-60}
export CK_DEFAULT_TIMEOUT
passed=0
failed=0
log=$(mktemp)
failures=$(mktemp)
for t in "$@"; do
    echo "== $t"
    # shellcheck disable=SC2086
    env $TT_TEST_ENV $TT_TEST_PREFIX "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    # Check's failure lines: "file:line:F:tcase:test:iteration: message" (E: an error)
    grep -E '^[^:]+:[0-9]+:[FE]:' "$log" | sed "s|^|$t: |" >>"$failures"
    summary=$(grep -E '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | tail -n 1)
    if [ -z "$summary" ]; then
        echo "!! $t exited with status $rc before Check's summary" | tee -a "$failures"
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
        echo "!! $t exited with status $rc" | tee -a "$failures"
        failed=$((failed + 1))
    fi
done
if [ -s "$failures" ]; then
    echo "== what failed:"
    cat "$failures"
fi
rm -f "$log" "$failures"
echo "check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
