// Schemas of the private compiled MMD ops. The public op ddfast::mmd is a Python custom op
// (ddfast/ops/mmd/_op.py) that calls these for the cpp backend. Rows are grouped by class segment:
// class c owns rows [x_offsets[c], x_offsets[c+1]) of x and [y_offsets[c], y_offsets[c+1]) of y.
// kernel: 0 gaussian, 1 imq, 2 linear; coefs: gaussian 1/(2 s^2), imq 1/s^2 per bandwidth.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ddfast, m) {
  m.def(
      "_mmd_forward(Tensor x, Tensor y, Tensor x_offsets, Tensor y_offsets, int kernel, float[] coefs, "
      "bool unbiased) -> Tensor");
  m.def(
      "_mmd_backward(Tensor grad_out, Tensor x, Tensor y, Tensor x_offsets, Tensor y_offsets, int kernel, "
      "float[] coefs, bool unbiased, bool need_x, bool need_y) -> (Tensor, Tensor)");
}
