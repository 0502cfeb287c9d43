// Torch-side helpers shared by the C++ CPU kernels and the CUDA glue (cuda.cpp): accumulate dtypes, the
// kernels' element type, pointer lists and alignment.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "common/hd.h"

namespace ddfast {

// The accumulate dtype (docs/semantics.md#op-contract): fp64 for fp64 inputs, else fp32.
inline at::ScalarType accumulate_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The element type of the CUDA kernels (csrc/common/hd.h) for a tensor dtype.
inline DType kernel_dtype(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t);
  }
}

inline const at::Tensor* optional_ptr(const c10::optional<at::Tensor>& t) { return t.has_value() ? &*t : nullptr; }

// Whether every given tensor (null pointers are skipped) starts on a 16-byte boundary: the CUDA kernels
// then use 16-byte vector accesses.
inline bool aligned16(std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors)
    if (t != nullptr && reinterpret_cast<uintptr_t>(t->const_data_ptr()) % 16 != 0) return false;
  return true;
}

// The data pointers of a list of tensors, as T.
template <typename T>
std::vector<const T*> data_pointers(at::TensorList tensors) {
  std::vector<const T*> ptrs;
  ptrs.reserve(tensors.size());
  for (const auto& t : tensors) ptrs.push_back(t.const_data_ptr<T>());
  return ptrs;
}

template <typename T>
std::vector<T*> mutable_pointers(const std::vector<at::Tensor>& tensors) {
  std::vector<T*> ptrs;
  ptrs.reserve(tensors.size());
  for (const auto& t : tensors) ptrs.push_back(t.data_ptr<T>());
  return ptrs;
}

}  // namespace ddfast
