// Helpers of the flat-vector ops (param_match_loss, sgd_step, adjoint_step): input checks for direct
// torch.ops calls (user-facing validation happens once in Python; shared by the CPU kernels and the
// CUDA glue) and a deterministic parallel loop for the CPU kernels. Helpers of every op are in
// csrc/shared/.
//
// for_chunks() splits [0, n) into FIXED chunks of kChunk elements (independent of the thread count),
// runs them with at::parallel_for, lets each chunk write NSUMS partial sums, and adds the partials in
// chunk order: the result is bitwise the same for any number of threads. Inside a chunk, lane_sums()
// accumulates fp32/fp64 inputs in explicit SIMD vectors (a fixed lane assignment, so nothing is
// reassociated by the compiler); fp16/bf16 inputs convert element by element.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <utility>
#include <vector>

#include "shared/simd.h"

namespace ddfast {
namespace flat {

constexpr int64_t kChunk = 1 << 14;  // elements per parallel task (64 KiB of fp32 per vector)

inline void check_vector(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name,
                         at::DeviceType device = at::kCPU) {
  TORCH_CHECK(t.dim() == 1 && t.is_contiguous() && t.device().type() == device, op, ": ", name,
              " must be a contiguous 1-D ", c10::DeviceTypeName(device), " tensor");
  TORCH_CHECK(t.scalar_type() == ref.scalar_type() && t.numel() == ref.numel() && t.device() == ref.device(), op,
              ": ", name, " must match the first vector's dtype, length and device");
}

// check_vector for each named vector against the first one; a null pointer is an absent optional vector.
inline void check_vectors(const char* op, std::initializer_list<std::pair<const char*, const at::Tensor*>> vectors,
                          at::DeviceType device = at::kCPU) {
  const at::Tensor& ref = *vectors.begin()->second;
  for (const auto& [name, t] : vectors)
    if (t != nullptr) check_vector(*t, ref, op, name, device);
}

// A 0-d floating-point tensor on ref's device (a learning rate or an upstream gradient, read in-kernel by
// the CUDA kernels).
inline void check_scalar(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name) {
  TORCH_CHECK(t.numel() == 1 && at::isFloatingType(t.scalar_type()) && t.device() == ref.device(), op, ": ", name,
              " must be a one-element floating-point tensor on the vectors' device");
}

// The value of a 0-d floating-point tensor (a learning rate), in the accumulate type.
template <typename Acc>
Acc scalar_value(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 0 && at::isFloatingType(t.scalar_type()), op, ": ", name,
              " must be a 0-d floating-point tensor");
  return static_cast<Acc>(t.item<double>());
}

// body(begin, end, partial) handles elements [begin, end) and writes NSUMS sums to partial[0..NSUMS).
template <int NSUMS, typename Acc, typename Body>
std::array<Acc, NSUMS> for_chunks(int64_t n, const Body& body) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<Acc> partial(std::max<int64_t>(chunks, 1) * NSUMS, Acc(0));
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) body(c * kChunk, std::min(n, (c + 1) * kChunk), partial.data() + c * NSUMS);
  });
  std::array<Acc, NSUMS> total{};
  for (int64_t c = 0; c < chunks; ++c)
    for (int k = 0; k < NSUMS; ++k) total[k] += partial[c * NSUMS + k];
  return total;
}

// Element access for lane_sums' term: ScalarAt reads/writes element i converted to/from Acc; VectorAt
// reads/writes the 16-byte SIMD vector (GCC/Clang vector extension) of Acc starting at element i.
template <typename T, typename Acc>
struct ScalarAt {
  int64_t i;
  Acc operator()(const T* p) const { return static_cast<Acc>(p[i]); }
  void store(T* p, Acc x) const { p[i] = static_cast<T>(x); }
};

template <typename Acc>
struct VectorAt {
  using V = typename Simd<Acc>::type;
  int64_t i;
  V operator()(const Acc* p) const {
    V x;
    std::memcpy(&x, p + i, sizeof(V));
    return x;
  }
  void store(Acc* p, V x) const { std::memcpy(p + i, &x, sizeof(V)); }
};

// Sums over [begin, end) written to out[0..NSUMS): term(at, v) computes element(s) `at` (a ScalarAt or,
// when T is the accumulate type, a VectorAt: the term is a generic lambda) and writes its NSUMS values to
// v; it may also store outputs through at.store. Fixed order: kUnroll vector accumulators of
// kWidth lanes each, reduced lane by lane, then the scalar tail.
template <int NSUMS, typename T, typename Acc, typename Term>
void lane_sums(int64_t begin, int64_t end, Acc* out, const Term& term) {
  Acc total[NSUMS] = {};
  int64_t i = begin;
  if constexpr (std::is_same_v<T, Acc>) {
    using V = typename Simd<Acc>::type;
    constexpr int64_t W = Simd<Acc>::kWidth;
    V acc[NSUMS][kUnroll] = {};
    for (; i + W * kUnroll <= end; i += W * kUnroll) {
      for (int u = 0; u < kUnroll; ++u) {
        V v[NSUMS];
        term(VectorAt<Acc>{i + u * W}, v);
        for (int k = 0; k < NSUMS; ++k) acc[k][u] += v[k];
      }
    }
    for (int k = 0; k < NSUMS; ++k)
      for (int u = 0; u < kUnroll; ++u)
        for (int64_t j = 0; j < W; ++j) total[k] += acc[k][u][j];
  }
  for (; i < end; ++i) {
    Acc v[NSUMS];
    term(ScalarAt<T, Acc>{i}, v);
    for (int k = 0; k < NSUMS; ++k) total[k] += v[k];
  }
  for (int k = 0; k < NSUMS; ++k) out[k] = total[k];
}

}  // namespace flat
}  // namespace ddfast
