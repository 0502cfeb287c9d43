// The Python module ddfast._C: importing it loads the library, which registers the compiled ops
// (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL in csrc/<op>/). It also says whether CUDA kernels were built.
#include <pybind11/pybind11.h>

#ifndef TORCH_EXTENSION_NAME
#define TORCH_EXTENSION_NAME _C
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ddfast compiled kernels";
  m.def("built_with_cuda", []() {
#ifdef DDFAST_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
}
