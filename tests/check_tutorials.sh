#!/bin/sh
# check_tutorials.sh - the tutorials quote what their companion programs really print,
# and the code they show is really in those programs.
#
#   sh tests/check_tutorials.sh [BUILD] [--update]       (make check-docs runs it)
#
# In docs/tutorials/*.md:
#
#   <!-- output: t01_tensors [args] -->          the fenced block up to <!-- /output -->
#   ```                                          must equal the stdout of
#   ...                                          BUILD/examples/tutorials/t01_tensors [args]
#   ```                                          (which must exit 0); hex addresses
#   <!-- /output -->                             (0x55d1...) are written 0x... on both sides
#
#   <!-- code: t03_custom_op.c -->               every line of the fenced block must
#   ```c                                         appear, contiguous and in order, in
#   ...                                          examples/tutorials/t03_custom_op.c
#   ```
#   <!-- /code -->
#   (the path is relative to examples/tutorials/: ../../tinytorch/tensor.h quotes a header)
#
# Links from docs/tutorials/README.md to tutorials must resolve. --update rewrites the
# output blocks with the programs' current output (then review the diff).
set -u
cd "$(dirname "$0")/.."
BUILD=build
UPDATE=0
for a in "$@"; do
    case $a in
    --update) UPDATE=1 ;;
    *) BUILD=$a ;;
    esac
done
DOCS=docs/tutorials
tmp=${TMPDIR:-/tmp}/tt_tut.$$
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT INT TERM
TAB=$(printf '\t')
fail=0
nout=0
ncode=0

normalize() { sed -e 's/0x[0-9a-fA-F][0-9a-fA-F]*/0x.../g'; }

# print the fenced block that follows marker line number $2 in file $1
block_after() {
    awk -v start="$2" 'NR <= start { next }
        /^<!-- \/(output|code) -->/ { exit }
        /^```/ { if (inb) exit; inb = 1; next }
        inb { print }' "$1"
}

for md in "$DOCS"/*.md; do
    [ -f "$md" ] || continue
    # output blocks: "lineno<TAB>program and args"
    grep -n '^<!-- output: .* -->' "$md" | sed -e "s/:<!-- output: /$TAB/" -e 's/ -->$//' > "$tmp/markers"
    while IFS="$TAB" read -r line cmd; do
        nout=$((nout + 1))
        prog=${cmd%% *}
        args=""
        [ "$prog" != "$cmd" ] && args=${cmd#* }
        bin=$BUILD/examples/tutorials/$prog
        if [ ! -x "$bin" ]; then
            echo "check_tutorials: $md:$line: $bin is not built"
            fail=1
            continue
        fi
        # shellcheck disable=SC2086
        if ! "$bin" $args < /dev/null > "$tmp/raw" 2> "$tmp/err"; then
            echo "check_tutorials: $md:$line: '$prog $args' exited with an error:"
            cat "$tmp/err"
            fail=1
        fi
        normalize < "$tmp/raw" > "$tmp/actual"
        block_after "$md" "$line" > "$tmp/quoted"
        if [ "$UPDATE" = 1 ]; then
            cp "$tmp/actual" "$tmp/new.$line"
        elif ! diff -u "$tmp/quoted" "$tmp/actual" > "$tmp/diff"; then
            echo "check_tutorials: $md:$line: quoted output of '$cmd' differs from what it prints"
            echo "  (--- quoted in the tutorial, +++ printed now; fix, or run: sh tests/check_tutorials.sh $BUILD --update)"
            cat "$tmp/diff"
            fail=1
        fi
    done < "$tmp/markers"
    if [ "$UPDATE" = 1 ] && [ -s "$tmp/markers" ]; then
        awk -v dir="$tmp" '
            /^<!-- output: .* -->/ { print; n = NR; state = 1; next }
            state == 1 && /^```/ { print; f = dir "/new." n
                                   while ((getline l < f) > 0) print l
                                   close(f); state = 2; next }
            state == 2 { if (/^```/) { print; state = 0 } ; next }
            { print }' "$md" > "$tmp/md" && cp "$tmp/md" "$md"
        rm -f "$tmp"/new.*
        echo "check_tutorials: updated $md"
    fi

    # code blocks
    grep -n '^<!-- code: .* -->' "$md" | sed -e "s/:<!-- code: /$TAB/" -e 's/ -->$//' > "$tmp/markers"
    while IFS="$TAB" read -r line src; do
        ncode=$((ncode + 1))
        file=examples/tutorials/$src
        block_after "$md" "$line" > "$tmp/quoted"
        if [ ! -f "$file" ]; then
            echo "check_tutorials: $md:$line: $file does not exist"
            fail=1
        elif ! awk 'NR == FNR { q[++nq] = $0; next } { s[++ns] = $0 }
                END { for (i = 1; i + nq - 1 <= ns; i++) {
                          for (k = 1; k <= nq && s[i + k - 1] == q[k]; k++) ;
                          if (k > nq) exit 0 }
                      exit 1 }' "$tmp/quoted" "$file"; then
            echo "check_tutorials: $md:$line: the code block is not a verbatim excerpt of $file"
            fail=1
        fi
    done < "$tmp/markers"
done

# the index links only to tutorials that exist
if [ -f "$DOCS/README.md" ]; then
    for t in $(grep -o '([0-9][0-9]-[a-z0-9-]*\.md)' "$DOCS/README.md" | tr -d '()'); do
        [ -f "$DOCS/$t" ] || { echo "check_tutorials: $DOCS/README.md links to missing $t"; fail=1; }
    done
else
    echo "check_tutorials: $DOCS/README.md is missing"
    fail=1
fi

if [ $fail -ne 0 ]; then
    echo "check_tutorials: FAILED"
    exit 1
fi
echo "check_tutorials: $nout quoted outputs and $ncode code excerpts match their programs"
