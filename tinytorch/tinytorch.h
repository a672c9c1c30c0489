/* tinytorch.h - the whole public API of tinyTorch-C.
 *
 *   tensor.h     tensors: creation, names, printing
 *   autograd.h   the tape, backward, no-grad scopes, the step arena, writing ops
 *   ops.h        every differentiable op
 *   gradcheck.h  finite-difference gradient checking
 *   profile.h    where the time goes, op by op
 *   rng.h        the portable seeded random number generator
 *   error.h      error handler and status codes
 *   kernels/gemm.h   the matrix-multiply kernel under tt_matmul
 *   nn/          modules: params, Linear ... DeepSeek V3 toy model
 *   optim/       SGD, AdamW, clipping, schedules
 *   io/          JSON, safetensors, checkpoints
 */
#ifndef TINYTORCH_H
#define TINYTORCH_H

#include "autograd.h"
#include "error.h"
#include "gradcheck.h"
#include "ops.h"
#include "ops_attention.h"
#include "profile.h"
#include "rng.h"
#include "tensor.h"
#include "kernels/gemm.h"
#include "nn/params.h"
#include "nn/nn.h"
#include "nn/moe.h"
#include "nn/mla.h"
#include "nn/deepseek.h"
#include "optim/optim.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "io/checkpoint.h"

#endif
