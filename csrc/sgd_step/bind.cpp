// Schema of the private compiled sgd_step op. The public op ddfast::sgd_step is a Python custom op
// (ddfast/ops/sgd_step/_op.py) that calls it for the cpp backend; its backward is _adjoint_step.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ddfast, m) {
  m.def(
      "_sgd_step_forward(Tensor theta, Tensor grad, Tensor lr, Tensor? velocity, float momentum, "
      "bool with_velocity) -> (Tensor, Tensor)");
}
