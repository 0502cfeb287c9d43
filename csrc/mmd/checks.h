// Internal consistency checks for the compiled MMD ops. User-facing validation (with argument names)
// happens once in Python (ddfast/ops/mmd/__init__.py); these guard direct torch.ops calls.
#pragma once

#include <ATen/ATen.h>

namespace ddfast {
namespace mmd {

enum Kernel : int64_t { kGaussian = 0, kImq = 1, kLinear = 2 };

inline void check_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& x_offsets,
                         const at::Tensor& y_offsets, int64_t kernel) {
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(1) == y.size(1), "mmd: x and y must be 2-D with equal columns");
  TORCH_CHECK(x.is_contiguous() && y.is_contiguous(), "mmd: x and y must be contiguous");
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "mmd: x and y must have the same dtype");
  TORCH_CHECK(kernel >= kGaussian && kernel <= kLinear, "mmd: unknown kernel code ", kernel);
  for (const auto* off : {&x_offsets, &y_offsets}) {
    TORCH_CHECK(off->scalar_type() == at::kLong && off->dim() == 1 && off->numel() >= 2 && off->is_contiguous(),
                "mmd: offsets must be contiguous int64 [K + 1]");
  }
  TORCH_CHECK(x_offsets.numel() == y_offsets.numel(), "mmd: x_offsets and y_offsets differ in length");
  const int64_t* xo = x_offsets.const_data_ptr<int64_t>();
  const int64_t* yo = y_offsets.const_data_ptr<int64_t>();
  const int64_t k = x_offsets.numel() - 1;
  TORCH_CHECK(xo[0] == 0 && yo[0] == 0 && xo[k] == x.size(0) && yo[k] == y.size(0),
              "mmd: offsets must run from 0 to the number of rows");
  for (int64_t c = 0; c < k; ++c) {
    TORCH_CHECK(xo[c] <= xo[c + 1] && yo[c] <= yo[c + 1], "mmd: offsets must be non-decreasing");
  }
}

}  // namespace mmd
}  // namespace ddfast
