// Schemas of the private compiled DSA pass ops. The public op ddfast::dsa_pass is a Python custom op
// (ddfast/ops/dsa/_op.py) that calls these for the cpp backend.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ddfast, m) {
  m.def("_dsa_pass_forward(Tensor x, Tensor table, Tensor? row_index, int[] ops, int[] geometry) -> Tensor");
  m.def("_dsa_pass_backward(Tensor grad, Tensor table, Tensor? row_index, int[] ops, int[] geometry) -> Tensor");
}
