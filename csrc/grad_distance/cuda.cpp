// Torch glue for the grad_distance CUDA kernels: tensor checks, the pointer table, the stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "grad_distance/checks.h"
#include "grad_distance/grad_distance_cuda.h"
#include "grad_distance/math.h"

namespace ddfast {
namespace grad_distance {
namespace {

DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    default: TORCH_CHECK(false, "grad_distance: unsupported dtype ", t);
  }
}

// Absolute addresses of each list in turn, copied to the device through pinned memory (the caching
// host allocator keeps the buffer alive until the copy has run), and whether all start 16-byte aligned.
std::pair<at::Tensor, bool> pointer_table(std::initializer_list<at::TensorList> lists, const at::Device& device) {
  int64_t n = 0;
  for (const auto& list : lists) n += static_cast<int64_t>(list.size());
  auto host = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* p = host.data_ptr<int64_t>();
  bool aligned = true;
  for (const auto& list : lists) {
    for (const auto& t : list) {
      *p = reinterpret_cast<int64_t>(t.const_data_ptr());
      aligned = aligned && *p % 16 == 0;
      ++p;
    }
  }
  return {host.to(device, /*non_blocking=*/true), aligned};
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(at::TensorList g_syn, at::TensorList g_real, const at::Tensor& items,
                                                const at::Tensor& item_weight, const at::Tensor& part_ptr,
                                                const at::Tensor& part_weight, int64_t metric) {
  check_inputs(g_syn, g_real, items, item_weight);
  const auto& ref = g_syn[0];
  const c10::cuda::CUDAGuard guard(ref.device());
  const auto acc_type = stats_dtype(ref);
  const int64_t num_classes = part_ptr.numel() - 1;
  const int64_t num_parts = part_weight.numel();
  auto partials = at::empty({num_parts * 3}, ref.options().dtype(acc_type));
  auto out = at::empty({num_classes}, ref.options().dtype(acc_type));
  auto stats = metric == kOurs ? partials : at::empty({metric == kCos ? 3 * num_classes : 0}, partials.options());
  auto [table, aligned] = pointer_table({g_syn, g_real}, ref.device());
  C10_CUDA_CHECK(launch_forward(to_dtype(ref.scalar_type()), static_cast<int>(metric), table.const_data_ptr<int64_t>(),
                                static_cast<int64_t>(g_syn.size()), items.const_data_ptr<int64_t>(),
                                item_weight.const_data_ptr<double>(), items.size(0), part_ptr.const_data_ptr<int64_t>(),
                                part_weight.const_data_ptr<double>(), num_classes, partials.data_ptr(),
                                stats.numel() ? stats.data_ptr() : nullptr, out.data_ptr(), aligned,
                                c10::cuda::getCurrentCUDAStream()));
  return {out, stats};
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> backward_cuda(
    const at::Tensor& grad_out, at::TensorList g_syn, at::TensorList g_real, const at::Tensor& stats,
    const at::Tensor& items, const at::Tensor& item_weight, int64_t metric, bool need_syn, bool need_real) {
  check_inputs(g_syn, g_real, items, item_weight);
  const auto& ref = g_syn[0];
  const c10::cuda::CUDAGuard guard(ref.device());
  auto dsyn = empty_like_all(g_syn, need_syn);
  auto dreal = empty_like_all(g_real, need_real);
  if (!need_syn && !need_real) return {dsyn, dreal};
  const auto go = grad_out.to(stats_dtype(ref)).contiguous();
  // Unneeded outputs are stood in for by the inputs' addresses in the table; the kernel never writes them.
  auto [table, aligned] = pointer_table({g_syn, g_real, need_syn ? at::TensorList(dsyn) : g_syn,
                                         need_real ? at::TensorList(dreal) : g_real}, ref.device());
  C10_CUDA_CHECK(launch_backward(to_dtype(ref.scalar_type()), static_cast<int>(metric), table.const_data_ptr<int64_t>(),
                                 static_cast<int64_t>(g_syn.size()), items.const_data_ptr<int64_t>(),
                                 item_weight.const_data_ptr<double>(), items.size(0),
                                 stats.numel() ? stats.const_data_ptr() : nullptr, go.const_data_ptr(), need_syn,
                                 need_real, aligned, c10::cuda::getCurrentCUDAStream()));
  return {dsyn, dreal};
}

}  // namespace

TORCH_LIBRARY_IMPL(ddfast, CUDA, m) {
  m.impl("_grad_distance_forward", &forward_cuda);
  m.impl("_grad_distance_backward", &backward_cuda);
}

}  // namespace grad_distance
}  // namespace ddfast
