// Schema of the private compiled adjoint_step op. The public op ddfast::adjoint_step is a Python custom op
// (ddfast/ops/adjoint_step/_op.py) that calls it for the cpp backend; sgd_step's backward uses it too.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ddfast, m) {
  m.def(
      "_adjoint_step(Tensor lam, Tensor? nu, Tensor? direction, Tensor lr, float momentum, bool with_velocity) "
      "-> (Tensor, Tensor, Tensor)");
}
