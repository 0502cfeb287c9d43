// Helpers of the flat-vector ops (param_match_loss, sgd_step, adjoint_step): input checks for direct
// torch.ops calls (user-facing validation happens once in Python) and a deterministic parallel loop.
//
// for_chunks() splits [0, n) into FIXED chunks of kChunk elements (independent of the thread count),
// runs them with at::parallel_for, lets each chunk write NSUMS partial sums, and adds the partials in
// chunk order: the result is bitwise the same for any number of threads. Inside a chunk, sums use
// kLanes independent accumulators (lane l takes elements i with i % kLanes == l), which the compiler
// vectorises without reassociating anything.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <vector>

namespace ddfast {
namespace flat {

constexpr int64_t kChunk = 1 << 14;  // elements per parallel task (64 KiB of fp32 per vector)
constexpr int kLanes = 8;

inline at::ScalarType accumulate_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_vector(const at::Tensor& t, const at::Tensor& ref, const char* op, const char* name) {
  TORCH_CHECK(t.dim() == 1 && t.is_contiguous() && t.device().is_cpu(), op, ": ", name,
              " must be a contiguous 1-D CPU tensor");
  TORCH_CHECK(t.scalar_type() == ref.scalar_type() && t.numel() == ref.numel(), op, ": ", name,
              " must match the first vector's dtype and length");
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

// Lane-wise sums over [begin, end): term(i, values) writes the NSUMS values of element i.
template <int NSUMS, typename Acc, typename Term>
void lane_sums(int64_t begin, int64_t end, Acc* out, const Term& term) {
  Acc acc[NSUMS][kLanes] = {};
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      Acc v[NSUMS];
      term(i + l, v);
      for (int k = 0; k < NSUMS; ++k) acc[k][l] += v[k];
    }
  }
  for (int l = 0; i < end; ++i, ++l) {
    Acc v[NSUMS];
    term(i, v);
    for (int k = 0; k < NSUMS; ++k) acc[k][l] += v[k];
  }
  for (int k = 0; k < NSUMS; ++k) {
    Acc s(0);
    for (int l = 0; l < kLanes; ++l) s += acc[k][l];
    out[k] = s;
  }
}

}  // namespace flat
}  // namespace ddfast
