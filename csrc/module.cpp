// The Python module ddfast._C: importing it loads the library, which registers the compiled ops
// (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL in csrc/<op>/). It also says whether CUDA kernels were built.
// Written against CPython's limited API (setup.py defines Py_LIMITED_API for 3.10) and without pybind11, so one
// build loads in every CPython >= 3.10: the wheel is tagged abi3.
#include <Python.h>

static PyObject* built_with_cuda(PyObject*, PyObject*) {
#ifdef DDFAST_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"built_with_cuda", built_with_cuda, METH_NOARGS, "True when the CUDA kernels were compiled in"},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "ddfast compiled kernels", -1, methods,
                                 nullptr, nullptr, nullptr, nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
