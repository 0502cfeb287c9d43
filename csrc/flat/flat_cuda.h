// Grid of the flat-vector CUDA kernels (param_match_loss, sgd_step, adjoint_step). Torch-free and
// host-safe: the torch glue sizes the per-block partial sums with the same numbers the kernels use.
#pragma once

#include <cstdint>

#include "common/hd.h"

namespace ddfast {
namespace flat {

// Elements per block. Fixed, independent of the device, so the per-block partial sums and their
// fixed-order finalize give the same bits on every GPU. A multiple of every 16-byte vector width (8
// fp16/bf16, 4 fp32, 2 fp64): each block's range starts 16-byte aligned when the vector does.
constexpr int64_t kBlockElements = 2048;
constexpr int kThreads = 256;

DDFAST_HD int64_t num_blocks(int64_t numel) { return (numel + kBlockElements - 1) / kBlockElements; }

}  // namespace flat
}  // namespace ddfast
