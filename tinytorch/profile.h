/* profile.h - where a training step's time goes, op by op (torch.profiler's op table).
 *
 *   tt_profile_start();
 *   for (...) { forward; tt_backward(loss); tt_optim_step(opt); tt_tape_reset(); }
 *   tt_profile_stop();
 *   tt_profile_print(stdout, 20);   // the 20 costliest rows (op, caller, module)
 *   tt_profile_reset();             // forget them (and free the table)
 *
 * While the profiler runs, every op is timed, keyed by its name, the caller's file:line
 * (the src an op records on the tape) and its module: the name of its first named
 * persistent input (a parameter) with the numbers of layers and experts written as '*'
 * and a last ".weight" / ".bias" dropped, so that "layers.3.moe.experts.12.fc1.weight"
 * becomes "layers.*.moe.experts.*.fc1". A Linear's forward called from one line of
 * layers.c thus gives one row per kind of Linear in the model (q_proj, fc1, the head...),
 * summed over its layers and experts.
 *   - backward: the wall time of the op's backward function, exactly;
 *   - forward: the wall time since the previous op finished. Ops compute their output
 *     and then record it, and there is no hook before an op starts, so whatever ran in
 *     between (the caller's own code, e.g. building an index list) is counted to the
 *     next op. The clock restarts at tt_profile_start, at the end of every backward
 *     sweep and at tt_tape_reset, so the optimizer's update and the batch preparation
 *     between steps are counted to no op; tt_profile_print shows them as the wall time
 *     outside ops.
 * Ops run in a no-grad scope (nothing recorded) are timed too. The cost is two clock
 * reads, the module name and a hash lookup per op and per backward: ~150 ns (about 1% of
 * the toy model's 2.5 ms step, less for larger models), one branch when it is off.
 *
 * The profiler keeps one table for the process and expects the ops to be called from one
 * thread, as the tape does.
 */
#ifndef TT_PROFILE_H
#define TT_PROFILE_H

#include <stdbool.h>
#include <stdio.h>

#include "tensor.h"

typedef struct tt_profile_entry {
    const char *op;   /* the op's name, as on the tape ("affine", "attention", ...)   */
    tt_src src;       /* the caller's file:line                                       */
    char module[TT_NAME_LEN]; /* see above; "" if no input is a named persistent one */
    long fwd_calls;   /* forward calls timed                                          */
    long bwd_calls;   /* backward calls timed                                         */
    double fwd_sec;   /* forward wall time (see above), seconds                       */
    double bwd_sec;   /* backward wall time, seconds                                  */
} tt_profile_entry;

void tt_profile_start(void);  /* start (or resume) timing ops; keeps earlier entries */
void tt_profile_stop(void);   /* stop timing; the entries stay until tt_profile_reset */
void tt_profile_reset(void);  /* forget every entry and the wall time (frees the table) */
bool tt_profile_active(void); /* between tt_profile_start and tt_profile_stop */

int tt_profile_count(void);                 /* number of (op, file:line, module) entries */
/* Entry i, in the order first seen; NULL if i is out of range. The pointer is valid until
 * the next op is timed (the table may grow) or tt_profile_reset. */
const tt_profile_entry *tt_profile_entry_at(int i);
double tt_profile_wall_sec(void); /* wall time the profiler has been running, seconds */

/* A table of the entries, costliest (forward + backward) first: at most max_rows rows
 * (<= 0: all), then one line for the rest; a header line with the totals and the wall
 * time outside ops. */
void tt_profile_print(FILE *f, int max_rows);

#endif
