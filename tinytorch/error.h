/* error.h - how tinytorch reports misuse.
 *
 * An invalid argument to an op (mismatched shapes, a bad axis, an index out of range)
 * is a bug in the caller: the message names the op, the tensors (name and shape) and
 * the caller's file:line, is passed to the error handler, and the program stops
 * (abort(), so gdb halts right there). A handler that does not return (longjmp, exit)
 * can take over; tests use one to assert that an error happened.
 *
 * File and parsing functions (checkpoints, configs, data) do NOT stop: they return a
 * tt_status and leave the message in tt_last_error().
 */
#ifndef TT_ERROR_H
#define TT_ERROR_H

#include "tensor.h"

typedef void (*tt_error_handler)(const char *message, void *user);

/* Install a handler (NULL = default: print to stderr and abort()). Returns the old one. */
tt_error_handler tt_set_error_handler(tt_error_handler handler, void *user);

/* Report an error: formats "tinytorch: <op>: <message> (at file:line)", stores it in
 * tt_last_error(), calls the handler, and aborts if the handler returns.            */
void tt_error_at(tt_src src, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

/* The most recent error message (from tt_error_at or a failed I/O call). */
const char *tt_last_error(void);

/* Status codes of functions that can fail on outside input. */
typedef enum tt_status {
    TT_OK = 0,
    TT_ERR_IO = 1,      /* open/read/write/rename failed                           */
    TT_ERR_FORMAT = 2,  /* malformed file or text                                  */
    TT_ERR_MISMATCH = 3,/* well-formed but does not fit (shape, dtype, name)       */
    TT_ERR_ARG = 4,     /* bad argument value                                      */
} tt_status;

/* Record an I/O-style error message for tt_last_error() and return `status`. */
tt_status tt_fail(tt_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "'name' [2, 3]" (or "<unnamed> [2, 3]") into buf of TT_DESCR_LEN bytes, returns buf. */
#define TT_DESCR_LEN 128
char *tt_describe(const tt_tensor *t, char *buf);

#endif
