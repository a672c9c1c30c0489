#!/bin/sh
# test_gdb.sh - the gdb support works: run gdb in batch mode on a -O0 -g3 build of
# examples/tutorials/t08_gdb, stop inside a library backward (binary_backward) and inside
# the tutorial's own backward (cube_backward), and check what the pretty-printer
# (tinytorch/gdb/tinytorch-gdb.py) and the tt-tape command print.
#
#   sh tests/test_gdb.sh build/gdb/examples/tutorials/t08_gdb     (make check-docs does it)
#
# gdb is required: without it this test fails, unless TT_SKIP_GDB=1 (local use only;
# CI installs gdb).
set -u
cd "$(dirname "$0")/.."
BIN=${1:?usage: test_gdb.sh path/to/debug/t08_gdb}
PY=tinytorch/gdb/tinytorch-gdb.py

if ! command -v gdb >/dev/null 2>&1; then
    if [ "${TT_SKIP_GDB:-0}" = 1 ]; then
        echo "test_gdb: SKIPPED (gdb not installed and TT_SKIP_GDB=1)"
        exit 0
    fi
    echo "test_gdb: FAILED: gdb is not installed (apt-get install gdb, or TT_SKIP_GDB=1 to skip locally)"
    exit 1
fi
[ -x "$BIN" ] || { echo "test_gdb: FAILED: $BIN not built"; exit 1; }

out=$(gdb -batch -nx -iex "source $PY" \
    -ex 'set pagination off' \
    -ex 'break binary_backward' -ex 'run' \
    -ex 'echo ==out\n' -ex 'p *n->out' \
    -ex 'echo ==in0\n' -ex 'p n->in[0]' \
    -ex 'echo ==node\n' -ex 'p *n' \
    -ex 'echo ==tape\n' -ex 'tt-tape' \
    -ex 'delete' -ex 'break cube_backward' -ex 'continue' \
    -ex 'echo ==before\n' -ex 'p *n->in[0]' \
    -ex 'finish' \
    -ex 'echo ==after\n' -ex 'p *n->in[0]' \
    -ex 'kill' \
    "$BIN" 2>&1)

fail=0
expect() { # expect "what" "fixed string"
    if printf '%s\n' "$out" | grep -F -q -- "$2"; then
        echo "  ok: $1"
    else
        echo "  NOT OK: $1: no line contains: $2"
        fail=1
    fi
}
echo "test_gdb: $BIN"
expect "p *t: name, shape, dtype, op, flags" "tt_tensor 's' [2, 3] float32 op=add #2 requires_grad temporary"
expect "p *t: first values of data" "data = {0.375, 0, 5.625, 12, 0.125, 2}"
expect "p *t: first values of grad" "grad = {1, 1, 1, 1, 1, 1}"
expect "p t (pointer summary)" "'c' [2, 3] float32 op=cube #0 requires_grad temporary"
expect "p *node" "tt_node #2 add"
expect "tt-tape header" "tape: 4 nodes"
expect "tt-tape custom op line" "cube         'c'                  [2, 3]       <- 'x' [2, 3]"
expect "tt-tape file:line" "(examples/tutorials/t08_gdb.c:"
expect "leaf tensor" "tt_tensor 'x' [2, 3] float32 op=leaf requires_grad persistent"
expect "grad before the buggy backward (2x from mul)" "grad = {1, -2, 3, 4, -1, 2}"
expect "grad after it (overwritten with 3x^2)" "grad = {0.75, 3, 6.75, 12, 0.75, 3}"
if [ $fail -ne 0 ]; then
    echo "---- gdb output ----"
    printf '%s\n' "$out"
    echo "test_gdb: FAILED"
    exit 1
fi
echo "test_gdb: passed"
