#!/bin/sh
# run.sh - the `make bench` driver: peak FLOPs, GEMM micro-benchmark, then every
# configuration with every thread count, ours and (if installed) PyTorch's, each in a
# fresh process, and a summary table. Called by bench/Makefile with:
#   BUILD_BENCH    directory of peak, bench_gemm, bench_train
#   BENCH_CONFIGS  "toy small medium"      BENCH_THREADS  "1 2"
#   BENCH_BUDGET   seconds of timed steps after which a run may stop (>= 3 steps)
#   BENCH_REPEAT   runs of each (configuration, threads), ours and PyTorch's alternating
#   BENCH_TORCH    1 = run PyTorch when $PYTHON can import torch
#   PYTHON         /usr/bin/python3 (Debian's, where python3-torch lives)
#   HAVE_CBLAS     1 if bench_gemm was built against OpenBLAS
set -u
B=${BUILD_BENCH:?}
CONFIGS=${BENCH_CONFIGS:-toy small medium}
THREADS=${BENCH_THREADS:-1 2}
BUDGET=${BENCH_BUDGET:-30}
REPEAT=${BENCH_REPEAT:-3}
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
RES="$B/results.txt"
: > "$RES"
status=0
start=$(date +%s)

# The environment PyTorch runs in (and only PyTorch): the settings that make it fastest
# here (see README.md). OpenBLAS's CORETYPE/L2_SIZE overrides are dropped so that it
# picks its own kernel, OpenMP threads sleep instead of spinning between regions, and
# glibc keeps freed memory instead of returning it to the system after every step.
#
# "Its own kernel" is the best one only if this OpenBLAS knows the CPU. Debian 12's 0.3.21
# does not know newer ones (an Emerald Rapids Xeon, family 6 model 207, comes out as
# "Prescott", an SSE3 kernel: 23-28 GFLOP/s on 1 thread where its AVX-512 "SkylakeX"
# kernel does 125). So when the kernel it picks by itself lacks the vector width the CPU
# has, the kernel for that width is named instead - PyTorch at its best on this machine.
blas_core() {   # the core OpenBLAS picks with no override, as it reports it at load time
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_VERBOSE=2 "$@" 2>&1 |
        sed -n 's/^Core: *//p' | head -n 1
}
blas_fix() {    # prints OPENBLAS_CORETYPE=... when the picked core $1 is too narrow
    case "$1" in SkylakeX | Cooperlake | SapphireRapids | "") return ;; esac # AVX-512, or no report
    case "$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)" in
    *avx512f*) echo "OPENBLAS_CORETYPE=SkylakeX" ;;
    *avx2*) case "$1" in Haswell | Zen) ;; *) echo "OPENBLAS_CORETYPE=Haswell" ;; esac ;;
    esac
}
TORCH_ENV="env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE \
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=268435456"

# Other processes competing for the CPUs: the smallest number of runnable tasks besides
# this shell over 5 samples in 0.2 s (field 4 of /proc/loadavg, "running/total", read by
# a builtin so that the sampler counts only itself).
others() {
    min=999
    for _ in 1 2 3 4 5; do
        if read -r _ _ _ rt _ < /proc/loadavg 2>/dev/null; then
            n=$(( ${rt%/*} - 1 ))
            [ $n -lt $min ] && min=$n
        else
            min=0
        fi
        sleep 0.04 2>/dev/null || true
    done
    echo $min
}
busy=""

# run LABEL CMD...: show the output (minus the LOSSES and GEMMCASE lines, which are for
# the summary), keep the machine-readable lines
run() {
    label=$1
    shift
    o=$(others)
    if [ "$o" -gt 0 ]; then
        echo "(warning: $o other runnable process(es) on this machine: timings disturbed)"
        busy="$busy $label($o)"
    fi
    out=$("$@" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -v -E '^(LOSSES|GEMMCASE) '
    printf '%s\n' "$out" | grep -E '^(RESULT|LOSSES|PEAK|SCALING|GEMMCASE) ' >> "$RES"
    if [ $rc -ne 0 ]; then
        echo "bench: $label FAILED (exit $rc)"
        status=1
    fi
    echo
}

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //')
echo "== tinyTorch-C benchmarks ($(date '+%Y-%m-%d %H:%M'), $cpu, $(nproc 2>/dev/null) CPUs)"
echo

echo "== peak: FMA loop"
run peak "$B/peak"
peak1=$(sed -n 's/^PEAK .*gflops_1t=\([0-9.]*\).*/\1/p' "$RES")
peak2=$(sed -n 's/^PEAK .*gflops_2t=\([0-9.]*\).*/\1/p' "$RES")
peak1=${peak1:-0}
peak2=${peak2:-0}

echo "== GEMM: tt_gemm vs OpenBLAS, 1 thread"
gemm_fix=""
if [ "${HAVE_CBLAS:-}" = 1 ]; then
    core=$(blas_core "$B/bench_gemm" --help)   # (the report comes at load time)
    gemm_fix=$(blas_fix "$core")
    [ -n "$gemm_fix" ] && echo "(OpenBLAS picks \"$core\" on this CPU by itself, a narrower kernel than it has: running it with $gemm_fix)"
else
    echo "(libopenblas-dev not found: tt_gemm alone)"
fi
# shellcheck disable=SC2086
run bench_gemm env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $gemm_fix OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 "$B/bench_gemm"

have_torch=0
if [ "${BENCH_TORCH:-1}" = 1 ] && [ -x "$PYTHON" ] && "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
    have_torch=1
    core=$(blas_core "$PYTHON" -c 'import torch')
    torch_fix=$(blas_fix "$core")
    if [ -n "$torch_fix" ]; then
        echo "(PyTorch's OpenBLAS picks \"$core\" on this CPU by itself, a narrower kernel than it has: PyTorch runs with $torch_fix)"
        echo
        TORCH_ENV="$TORCH_ENV $torch_fix"
    fi
else
    echo "(PyTorch not available to $PYTHON or BENCH_TORCH=0: tinytorch only)"
    echo
fi

# Each (configuration, threads) runs REPEAT times, ours and PyTorch's in turn, so that both
# see the same spells of a noisy machine; the summary takes the median over the runs.
for c in $CONFIGS; do
    for t in $THREADS; do
        if [ "$t" -ge 2 ]; then pk=$peak2; else pk=$peak1; fi
        r=1
        while [ $r -le "$REPEAT" ]; do
            echo "== $c, $t thread(s): tinytorch (run $r of $REPEAT)"
            # libgomp's default wait policy (spin a while, then sleep): a step runs hundreds
            # of parallel regions, and waking a sleeping (PASSIVE) thread for each costs
            # more than the regions save (small, 2 threads: 148 ms PASSIVE, 120 ms default).
            # With as many threads as cores the spinning thread takes no one's CPU.
            run "bench_train $c $t" env -u OMP_WAIT_POLICY "$B/bench_train" "$c" "$t" --budget "$BUDGET" --peak "$pk"
            if [ $have_torch = 1 ]; then
                echo "== $c, $t thread(s): pytorch (run $r of $REPEAT)"
                # shellcheck disable=SC2086
                # torch.set_num_threads does not reach Debian's pthread OpenBLAS, which would
                # otherwise use every core in a "1-thread" run: cap it to the same count
                run "bench_torch.py $c $t" $TORCH_ENV OPENBLAS_NUM_THREADS="$t" "$PYTHON" "$HERE/bench_torch.py" "$c" "$t" \
                    --budget "$BUDGET" --peak "$pk"
            fi
            r=$((r + 1))
        done
    done
done

# What the second thread buys, measured in one process: steps alternating between 1 and
# 2 threads in ABBA blocks (bench_train --alternate), so that both see the same spells of
# a host whose speed drifts; runs minutes apart (the table) may not.
case " $THREADS " in *" 1 "*) case " $THREADS " in *" 2 "*)
    for c in $CONFIGS; do
        echo "== $c, steps alternating 1 / 2 threads: tinytorch"
        run "bench_train $c --alternate 1,2" env -u OMP_WAIT_POLICY "$B/bench_train" "$c" \
            --alternate 1,2 --budget "$BUDGET"
    done ;;
esac ;; esac

# ---- summary ------------------------------------------------------------------------
# Per (implementation, configuration, threads): the median over the runs of each run's
# median step time; the ratio is the median of the runs' own ratios (run r of ours against
# run r of PyTorch, which ran right after it), with their range.
awk -v configs="$CONFIGS" -v threads="$THREADS" -v peak1="$peak1" -v peak2="$peak2" '
function field(line, key,    n, i, kv) {
    n = split(line, kv, " ")
    for (i = 1; i <= n; i++)
        if (index(kv[i], key "=") == 1) return substr(kv[i], length(key) + 2)
    return ""
}
# a field as a number, or "" if absent (field() returns a string, and awk compares two
# strings as text: "998" > "1002")
function num(s) { return s == "" ? "" : s + 0 }
# Two loss lists (" l1 l2 ..."): the first step where they differ over their common
# steps, 0 if none; common = how many steps they share (a run may stop early on its budget)
function first_diff(x, y,    nx, ny, lx, ly, i) {
    nx = split(x, lx, " "); ny = split(y, ly, " "); common = nx < ny ? nx : ny
    for (i = 1; i <= common; i++) if (lx[i] != ly[i]) return i
    return 0
}
# median of v[1..n] (sorted in place)
function median(v, n,    i, j, x) {
    for (i = 2; i <= n; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
    return n % 2 ? v[(n + 1) / 2] : 0.5 * (v[n / 2] + v[n / 2 + 1])
}
/^RESULT / {
    k = field($0, "impl") SUBSEP field($0, "config") SUBSEP field($0, "threads")
    r = ++nrun[k]
    ms[k, r] = num(field($0, "ms")); gf[k, r] = num(field($0, "gflops"))
    pct[k, r] = num(field($0, "pct_peak")); padj[k, r] = num(field($0, "pct_adj"))
    tk[k, r] = num(field($0, "tok_s"))
    m = field($0, "rss_mb") + 0; if (!(k in rss) || m > rss[k]) rss[k] = m
    if (field($0, "finite") != 1) nonfin[k] = 1
    loss[k] = field($0, "loss")
}
/^LOSSES / {
    k = field($0, "impl") SUBSEP field($0, "config") SUBSEP field($0, "threads")
    n = split($0, w, " "); s = ""
    for (i = 5; i <= n; i++) s = s " " w[i]
    if ((k in losses) && first_diff(losses[k], s)) rerun_differs[k] = 1
    losses[k] = s
}
/^GEMMCASE / {
    # the speed issue: the GEMM target covers the squares of 256-1024 and every model shape
    if (num(field($0, "square")) == 0 || num(field($0, "M")) >= 256) {
        r = field($0, "ratio") + 0
        if (!ngemm++ || r < gemm_min) {
            gemm_min = r
            gemm_which = sprintf("%s %s %sx%sx%s", field($0, "name"), field($0, "lay"),
                field($0, "M"), field($0, "N"), field($0, "K"))
        }
    }
}
/^SCALING / {
    inproc[field($0, "config")] = 1 / field($0, "ratio")
    sc[field($0, "config")] = sprintf("a 2-thread step takes %.3f of a 1-thread one (quartiles %.3f-%.3f, %d blocks): %.2fx; %.2f / %.2f ms",
        field($0, "ratio"), field($0, "ratio_p25"), field($0, "ratio_p75"), field($0, "blocks"),
        1 / field($0, "ratio"), field($0, "ms_a"), field($0, "ms_b"))
}
function fmt(v, f) { return v == "" ? "-" : sprintf(f, v) }
END {
    nc = split(configs, C, " "); nt = split(threads, T, " ")
    printf "== summary (peak %s GFLOP/s on 1 thread, %s on 2; ratio = torch ms / ours ms, > 1: ours faster;\n", peak1, peak2
    printf "   medians over the runs of each, ratio range over the runs in brackets; %%peak: of the\n"
    printf "   peak above, %%adj: of the peak probed alongside the steps, see bench/README.md)\n"
    printf "%-7s %3s %4s %10s %10s %17s %9s %8s %6s %5s %8s %9s %9s\n", "config", "thr", "runs", "ours ms", "torch ms", "ratio (range)", "tok/s", "GFLOP/s", "%peak", "%adj", "torchGF", "RSS ours", "RSS torch"
    for (i = 1; i <= nc; i++) for (j = 1; j <= nt; j++) {
        o = "tinytorch" SUBSEP C[i] SUBSEP T[j]; p = "torch" SUBSEP C[i] SUBSEP T[j]
        if (!(o in nrun) && !(p in nrun)) continue
        mo = mp = go = po = pj = gp = to = ""; ratio = "-"
        if (o in nrun) {
            for (r = 1; r <= nrun[o]; r++) { a[r] = ms[o, r]; b[r] = gf[o, r]; c[r] = pct[o, r]; d[r] = tk[o, r]; e[r] = padj[o, r] }
            mo = median(a, nrun[o]); go = median(b, nrun[o]); po = median(c, nrun[o]); to = median(d, nrun[o])
            pj = median(e, nrun[o])
        }
        if (p in nrun) {
            for (r = 1; r <= nrun[p]; r++) { a[r] = ms[p, r]; b[r] = gf[p, r] }
            mp = median(a, nrun[p]); gp = median(b, nrun[p])
        }
        if ((o in nrun) && (p in nrun)) {
            n = nrun[o] < nrun[p] ? nrun[o] : nrun[p]; lo = 1e30; hi = 0
            for (r = 1; r <= n; r++) {
                q[r] = ms[o, r] > 0 ? ms[p, r] / ms[o, r] : 0
                if (q[r] < lo) lo = q[r]; if (q[r] > hi) hi = q[r]
            }
            rmed = median(q, n)
            ratio = n > 1 ? sprintf("%.2f (%.2f-%.2f)", rmed, lo, hi) : sprintf("%.2f", q[1])
            vs_torch[C[i], T[j]] = rmed
        }
        if (o in nrun) { ours_ms[C[i], T[j]] = mo; ours_pct[C[i], T[j]] = po }
        printf "%-7s %3s %4s %10s %10s %17s %9s %8s %6s %5s %8s %9s %9s\n", C[i], T[j],
            (o in nrun) ? nrun[o] : nrun[p], fmt(mo, "%.2f"), fmt(mp, "%.2f"), ratio,
            fmt(to, "%.0f"),
            fmt(go, "%.1f"), fmt(po, "%.1f"), fmt(pj, "%.1f"), fmt(gp, "%.1f"),
            fmt((o in rss) ? rss[o] : "", "%.0f MB"), fmt((p in rss) ? rss[p] : "", "%.0f MB")
    }
    nsc = 0
    for (i = 1; i <= nc; i++) if (C[i] in sc) {
        if (!nsc++) { print ""; print "second thread, in one process (steps alternating 1 / 2 threads, ABBA blocks):" }
        printf "  %-7s %s\n", C[i], sc[C[i]]
    }
    print ""
    print "correctness guard (tinytorch): every loss finite; every run of a configuration and"
    print "thread count gives the same losses; 1-thread vs 2-thread losses of the same steps"
    print "(same seed, same batches; printed %.9g, so equal text = equal bits)"
    for (i = 1; i <= nc; i++) {
        line = sprintf("  %-7s", C[i]); allfin = 1; any = 0; rerun_ok = 1
        for (j = 1; j <= nt; j++) {
            k = "tinytorch" SUBSEP C[i] SUBSEP T[j]
            if (!(k in loss)) continue
            any = 1; if (k in nonfin) allfin = 0; if (k in rerun_differs) rerun_ok = 0
        }
        if (!any) continue
        line = line (allfin ? " all losses finite;" : " NON-FINITE LOSS;")
        line = line (rerun_ok ? "" : " RUNS DIFFER;")
        a1 = "tinytorch" SUBSEP C[i] SUBSEP "1"; b1 = "tinytorch" SUBSEP C[i] SUBSEP "2"
        if ((a1 in losses) && (b1 in losses)) {
            first = first_diff(losses[a1], losses[b1]); m = common
            split(losses[a1], la, " "); split(losses[b1], lb, " ")
            line = line sprintf(" step %d: loss %s (1 thread), %s (2 threads);", m, la[m], lb[m])
            ident[C[i]] = !first
            if (!first) line = line sprintf(" bit-identical at all %d common steps", m)
            else line = line sprintf(" DIFFER from step %d (%s vs %s)", first, la[first], lb[first])
        } else {
            line = line sprintf(" final loss %s", (a1 in loss) ? loss[a1] : loss[b1])
        }
        alt = "tinytorch" SUBSEP C[i] SUBSEP "1,2"
        if ((a1 in losses) && (alt in losses)) {
            first = first_diff(losses[a1], losses[alt])
            line = line (first ? sprintf("; alternating 1 / 2 threads DIFFERS from step %d", first) : \
                sprintf("; alternating 1 / 2 threads: the same over %d steps", common))
        }
        print line
    }
    targets()
}
# The speed issue: its targets, each against the figures of this run (medians, as in the table).
# A target needs both of its figures; a missing one (a configuration or thread count not
# run, no PyTorch, no OpenBLAS) is reported as not measured.
function mark(v, t) { return v >= t ? "met" : "MISSED" }
function target(what, v, t, detail) {
    if (v == "") { printf "  %-48s %s\n", what, "not measured"; return }
    printf "  %-48s %6.2f  %-6s %s\n", what, v, mark(v, t), detail
}
# a target counted over configurations: m2 of m1 met (m1 = 0: not measured)
function count_target(what, m2, m1, detail) {
    if (!m1) { printf "  %-48s %s\n", what, "not measured"; return }
    printf "  %-48s %6s  %-6s %s\n", what, m2 "/" m1, m2 == m1 ? "met" : "MISSED", detail
}
# our 1-thread median over our 2-thread one (separate runs), "" if either is missing
function own_gain(c) {
    return (c SUBSEP 1) in ours_ms && (c SUBSEP 2) in ours_ms && ours_ms[c, 2] > 0 ? ours_ms[c, 1] / ours_ms[c, 2] : ""
}
function targets(    i, c, w, x, m1, m2, line) {
    print ""
    print "targets (the speed issue; x = times faster, ratios of medians; see bench/README.md):"
    target("toy, 1 thread: >= 3x PyTorch", vs_torch["toy", 1], 3)
    target("small, 1 thread: >= 1.1x PyTorch", vs_torch["small", 1], 1.1)
    target("medium, 1 thread: >= 1.1x PyTorch", vs_torch["medium", 1], 1.1)
    target("small, 2 threads: >= 1.6x PyTorch", vs_torch["small", 2], 1.6)
    target("medium, 2 threads: >= 1.6x PyTorch", vs_torch["medium", 2], 1.6)
    split("small medium", w, " ")
    for (i = 1; i <= 2; i++) {
        c = w[i]
        target(c ", 2 threads: >= 1.8x own 1 thread (runs)", own_gain(c), 1.8, "separate runs, minutes apart")
        target(c ", 2 threads: >= 1.8x own 1 thread (ABBA)", (c in inproc) ? inproc[c] : "", 1.8,
            "steps alternating in one process")
    }
    target("toy, 2 threads: not slower than 1 (runs)", own_gain("toy"), 1)
    target("toy, 2 threads: not slower than 1 (ABBA)", ("toy" in inproc) ? inproc["toy"] : "", 1)
    target("GEMM: >= 0.85 of OpenBLAS, 1 thread", ngemm ? gemm_min : "", 0.85,
        ngemm ? sprintf("the slowest of %d cases: %s", ngemm, gemm_which) : "")
    target("medium, 1 thread: >= 65% of peak", ("medium" SUBSEP 1) in ours_pct ? ours_pct["medium", 1] / 100 : "",
        0.65, "(as a fraction of the peak)")
    m1 = m2 = 0; line = ""
    split("toy small medium", x, " ")
    for (i = 1; i <= 3; i++) for (c = 1; c <= 2; c++) {
        if (!(("tinytorch" SUBSEP x[i] SUBSEP c) in rss) || !(("torch" SUBSEP x[i] SUBSEP c) in rss)) continue
        m1++
        if (rss["tinytorch", x[i], c] <= rss["torch", x[i], c]) m2++
        else line = line sprintf(" %s/%d", x[i], c)
    }
    count_target("peak memory <= PyTorch", m2, m1,
        m2 == m1 ? "(every configuration and thread count)" : "higher:" line)
    m1 = m2 = 0
    for (i = 1; i <= 3; i++) if (x[i] in ident) { m1++; m2 += ident[x[i]] }
    count_target("1 and 2 threads: identical losses", m2, m1, "(configurations, bit for bit)")
}' "$RES"

if [ -n "$busy" ]; then
    echo
    echo "WARNING: other processes were using the CPUs during:$busy"
    echo "         (count of other runnable tasks in brackets); rerun on an idle machine."
fi
echo
echo "bench: done in $(( $(date +%s) - start )) s; raw RESULT lines in $RES"
exit $status
