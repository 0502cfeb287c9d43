// Schemas of the private compiled k-means steps. The public ops ddfast::kmeans_assign / kmeans_update /
// kmeans_nearest are Python custom ops (ddfast/ops/kmeans/_op.py) that call these for the cpp backend.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(ddfast, m) {
  m.def("_kmeans_assign(Tensor x, Tensor centroids, Tensor offsets, bool with_distance) -> (Tensor, Tensor)");
  m.def("_kmeans_update(Tensor x, Tensor assignment, Tensor offsets, Tensor centroids) -> (Tensor, Tensor)");
  m.def("_kmeans_nearest(Tensor x, Tensor centroids, Tensor offsets, Tensor excluded) -> (Tensor, Tensor)");
}
