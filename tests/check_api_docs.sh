#!/bin/sh
# check_api_docs.sh - every public symbol of the installed headers is documented in
# docs/api.md, and api.md documents nothing that no longer exists.
#
# Public headers: tinytorch/**/*.h except internal.h (what `make install` copies).
# Public symbols: every identifier starting with tt_ or TT_ in their code (comments
# removed), minus the include guards: functions, function-like and constant macros,
# types, struct tags and enum constants.
# Documented: the name appears backquoted in the FIRST cell of a table row of api.md,
# e.g. "| `tt_add`, `tt_add_` | ... |".
#
#   sh tests/check_api_docs.sh            check (exit 1 listing what is missing)
#   sh tests/check_api_docs.sh --list     print "header symbol" for every public symbol
set -eu
cd "$(dirname "$0")/.."
API=docs/api.md
tmp=${TMPDIR:-/tmp}/tt_api.$$
trap 'rm -f "$tmp".*' EXIT INT TERM

headers=$(find tinytorch -name '*.h' ! -name internal.h | LC_ALL=C sort)

# header<TAB>symbol, in order of first appearance
for h in $headers; do
    awk -v H="$h" '
    # strip /* */ and // comments (string literals in headers hold no comment markers)
    {
        line = $0; out = ""
        while (length(line) > 0) {
            if (incom) {
                e = index(line, "*/"); if (e == 0) { line = ""; break }
                line = substr(line, e + 2); incom = 0
            } else {
                s = index(line, "/*"); c = index(line, "//")
                if (c > 0 && (s == 0 || c < s)) { out = out substr(line, 1, c - 1); line = ""; break }
                if (s == 0) { out = out line; line = ""; break }
                out = out substr(line, 1, s - 1); line = substr(line, s + 2); incom = 1
            }
        }
        if (out ~ /^#[ \t]*(ifndef|define|endif)[ \t]+[A-Z0-9_]*_H[ \t]*$/) next
        while (match(out, /(^|[^A-Za-z0-9_])(tt|TT)_[A-Za-z0-9_]*/)) {
            tok = substr(out, RSTART, RLENGTH); sub(/^[^A-Za-z_]/, "", tok)
            out = substr(out, RSTART + RLENGTH)
            if (!(tok in seen)) { seen[tok] = 1; print H "\t" tok }
        }
    }' "$h"
done | awk -F '\t' '!($2 in seen) { seen[$2] = 1; print }' > "$tmp.syms"

if [ "${1:-}" = "--list" ]; then tr '\t' ' ' < "$tmp.syms"; exit 0; fi

[ -f "$API" ] || { echo "check_api_docs: $API is missing"; exit 1; }
# names backquoted in the first cell of table rows
awk -F '|' '/^\|/ && NF > 2 {
    cell = $2
    while (match(cell, /`[^`]*`/)) {
        name = substr(cell, RSTART + 1, RLENGTH - 2); cell = substr(cell, RSTART + RLENGTH)
        sub(/[^A-Za-z0-9_].*$/, "", name)
        if (name != "") print name
    }
}' "$API" | LC_ALL=C sort -u > "$tmp.doc"
cut -f 2 "$tmp.syms" | LC_ALL=C sort -u > "$tmp.pub"

missing=$(LC_ALL=C comm -23 "$tmp.pub" "$tmp.doc")
stale=$(LC_ALL=C comm -13 "$tmp.pub" "$tmp.doc" | grep -E '^(tt|TT)_' || true)
n=$(wc -l < "$tmp.pub" | tr -d ' ')
status=0
if [ -n "$missing" ]; then
    echo "check_api_docs: public symbols not documented in $API:"
    for s in $missing; do printf '  %s  (%s)\n' "$s" "$(awk -F '\t' -v s="$s" '$2 == s { print $1; exit }' "$tmp.syms")"; done
    status=1
fi
if [ -n "$stale" ]; then
    echo "check_api_docs: $API documents names that no public header declares:"
    for s in $stale; do echo "  $s"; done
    status=1
fi
[ $status -eq 0 ] && echo "check_api_docs: all $n public symbols are documented in $API"
exit $status
