// Registration of an op's compiled kernels: the private schemas are declared in csrc/<op>/bind.cpp
// (TORCH_LIBRARY_FRAGMENT); each backend file registers its kernels for its dispatch key with this macro.
#pragma once

#include <torch/library.h>

// Registers FORWARD and BACKWARD as the KEY (CPU, CUDA) kernels of the schemas _<OP>_forward and
// _<OP>_backward.
#define DDFAST_IMPL_FORWARD_BACKWARD(KEY, OP, FORWARD, BACKWARD) \
  TORCH_LIBRARY_IMPL(ddfast, KEY, m) {                            \
    m.impl("_" #OP "_forward", &FORWARD);                         \
    m.impl("_" #OP "_backward", &BACKWARD);                       \
  }
