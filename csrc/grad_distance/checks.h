// Internal consistency checks and output allocation for the compiled grad_distance ops. User-facing validation (with
// argument names and indices) happens once in Python; these guard direct torch.ops calls.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "grad_distance/math.h"

namespace ddfast {
namespace grad_distance {

inline void check_inputs(at::TensorList g_syn, at::TensorList g_real, const at::Tensor& items,
                         const at::Tensor& item_weight) {
  TORCH_CHECK(!g_syn.empty() && g_syn.size() == g_real.size(), "grad_distance: g_syn and g_real must be non-empty "
              "and of equal length");
  for (size_t i = 0; i < g_syn.size(); ++i) {
    TORCH_CHECK(g_syn[i].is_contiguous() && g_real[i].is_contiguous(), "grad_distance: tensor ", i,
                " is not contiguous");
    TORCH_CHECK(g_syn[i].scalar_type() == g_syn[0].scalar_type() && g_real[i].scalar_type() == g_syn[0].scalar_type(),
                "grad_distance: tensor ", i, " has a different dtype");
    TORCH_CHECK(g_syn[i].device() == g_syn[0].device() && g_real[i].device() == g_syn[0].device(),
                "grad_distance: tensor ", i, " is on a different device");
  }
  TORCH_CHECK(items.scalar_type() == at::kLong && items.dim() == 2 && items.size(1) == kItemFields &&
                  items.is_contiguous(), "grad_distance: malformed work items");
  TORCH_CHECK(item_weight.scalar_type() == at::kDouble && item_weight.numel() == items.size(0),
              "grad_distance: malformed item weights");
}

// The accumulate dtype: of the partial sums, the statistics and the distance itself.
inline at::ScalarType stats_dtype(const at::Tensor& ref) {
  return ref.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline std::vector<at::Tensor> empty_like_all(at::TensorList tensors, bool needed) {
  std::vector<at::Tensor> out;
  if (!needed) return out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(at::empty_like(t, at::MemoryFormat::Contiguous));
  return out;
}

}  // namespace grad_distance
}  // namespace ddfast
