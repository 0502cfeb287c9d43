// Runtime choices turned into compile-time ones, so that the loops and kernels that test them (`if
// constexpr`, template arguments) have no branch inside. Torch-free and host-only (nvcc compiles it too).
#pragma once

#include <type_traits>

namespace ddfast {

// f(std::true_type{}) or f(std::false_type{}), and what it returns.
template <typename F>
decltype(auto) with_bool(bool value, F&& f) {
  return value ? f(std::true_type{}) : f(std::false_type{});
}

}  // namespace ddfast
