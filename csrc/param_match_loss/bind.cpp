// Schemas of the private compiled param_match_loss ops. The public op ddfast::param_match_loss is a Python
// custom op (ddfast/ops/param_match_loss/_op.py) that calls these for the cpp backend.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ddfast, m) {
  m.def("_param_match_loss_forward(Tensor theta_n, Tensor theta_start, Tensor theta_target) -> (Tensor, Tensor)");
  m.def(
      "_param_match_loss_backward(Tensor grad_out, Tensor theta_n, Tensor theta_start, Tensor theta_target, "
      "Tensor sums, bool need_n, bool need_start, bool need_target) -> (Tensor, Tensor, Tensor)");
}
