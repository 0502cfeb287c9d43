// Schemas of the private compiled bn_stat_loss ops. The public op ddfast::bn_stat_loss is a Python
// custom op (ddfast/ops/bn_stat_loss/_op.py) that calls these for the cpp backend.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ddfast, m) {
  m.def(
      "_bn_stat_loss_forward(Tensor[] activations, Tensor[] running_means, Tensor[] running_vars, Tensor layers, "
      "Tensor items, float[] weights) -> (Tensor, Tensor)");
  m.def(
      "_bn_stat_loss_backward(Tensor grad_out, Tensor[] activations, Tensor[] running_means, Tensor[] running_vars, "
      "Tensor stats, Tensor layers, Tensor items, float[] weights, bool need_act, bool need_stats) "
      "-> (Tensor[], Tensor[], Tensor[])");
}
