// 16-byte SIMD vectors for the C++ CPU kernels (GCC/Clang vector extensions, SSE2 and up): loops over
// fp32/fp64 inputs keep kUnroll independent vector accumulators per sum, in a fixed lane assignment, so
// nothing is reassociated by the compiler and the result does not depend on the thread count.
#pragma once

#include <cstdint>

namespace ddfast {

template <typename Acc>
struct Simd {
  typedef Acc type __attribute__((vector_size(16)));
  static constexpr int64_t kWidth = 16 / sizeof(Acc);
};

constexpr int kUnroll = 4;  // independent vector accumulators per sum

}  // namespace ddfast
