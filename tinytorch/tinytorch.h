/* tinytorch.h - the whole public API of tinyTorch-C.
 *
 *   tensor.h     tensors: creation, names, printing
 *   autograd.h   the tape, backward, no-grad scopes, the step arena, writing ops
 *   ops.h        every differentiable op
 *   gradcheck.h  finite-difference gradient checking
 *   rng.h        the portable seeded random number generator
 *   error.h      error handler and status codes
 */
#ifndef TINYTORCH_H
#define TINYTORCH_H

#include "autograd.h"
#include "error.h"
#include "gradcheck.h"
#include "ops.h"
#include "rng.h"
#include "tensor.h"

#endif
