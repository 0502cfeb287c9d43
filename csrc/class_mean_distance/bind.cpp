// Schemas of the private compiled class_mean_distance ops. The public op ddfast::class_mean_distance is a
// Python custom op (ddfast/ops/class_mean_distance/_op.py) that calls these for the cpp backend.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ddfast, m) {
  m.def(
      "_class_mean_distance_forward(Tensor f_syn, Tensor y_syn, Tensor f_real, Tensor y_real, int num_classes, "
      "bool per_class) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_class_mean_distance_backward(Tensor grad_out, Tensor y_syn, Tensor y_real, Tensor diff, Tensor scale, "
      "ScalarType dtype, bool need_syn, bool need_real) -> (Tensor, Tensor)");
}
