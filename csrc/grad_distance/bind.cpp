// Schemas of the private compiled grad_distance ops. The public op ddfast::grad_distance is a
// Python custom op (ddfast/ops/grad_distance/_op.py) that calls these for the cpp/cuda backends.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ddfast, m) {
  m.def(
      "_grad_distance_forward(Tensor[] g_syn, Tensor[] g_real, Tensor items, Tensor item_weight, "
      "Tensor part_ptr, Tensor part_weight, int metric) -> (Tensor, Tensor)");
  m.def(
      "_grad_distance_backward(Tensor grad_out, Tensor[] g_syn, Tensor[] g_real, Tensor stats, "
      "Tensor items, Tensor item_weight, int metric, bool need_syn, bool need_real) -> (Tensor[], Tensor[])");
}
