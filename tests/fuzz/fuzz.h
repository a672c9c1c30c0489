/* fuzz.h - the convention shared by the libFuzzer harnesses in tests/fuzz/.
 *
 * Each harness fuzz_<name>.c defines  int tt_fuzz_<name>(const uint8_t *data, size_t size)
 * and, through TT_FUZZ_ENTRY(tt_fuzz_<name>), the libFuzzer entry point. The replay
 * suite tests/test_fuzz_replay.c defines TT_FUZZ_NO_MAIN and #includes every harness, so
 * `make check` feeds the seed corpus and the crash regressions to exactly the code the
 * fuzzer ran (without libFuzzer; under `make sanitize` with ASan and UBSan).
 *
 * A harness must never stop on hostile input: parsers of outside input return a status.
 * Any invariant a harness checks itself fails with TT_FUZZ_ASSERT, which aborts (a crash
 * for libFuzzer; a failed test in the replay).
 */
#ifndef TT_FUZZ_H
#define TT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define TT_FUZZ_ASSERT(cond)                                                          \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #cond, __FILE__,   \
                    __LINE__);                                                        \
            abort();                                                                  \
        }                                                                             \
    } while (0)

#ifdef TT_FUZZ_NO_MAIN
#define TT_FUZZ_ENTRY(fn)
#else
#define TT_FUZZ_ENTRY(fn)                                                             \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                     \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fn(data, size); }
#endif

#endif
