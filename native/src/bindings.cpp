// The only file that includes pybind11: the private module edgesdk._native.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "edgesdk/core.h"

namespace py = pybind11;

PYBIND11_MODULE(_native, m) {
  m.doc() = "edgesdk native core (private; use the edgesdk package)";
  m.def("version", &edgesdk::version, "edgesdk version the native module was built from");
  m.def("build_info", [] {
    py::dict d;
    d["version"] = edgesdk::version();
    d["arch"] = edgesdk::arch();
    d["compiled_isa"] = edgesdk::compiled_isa();
    d["runtime_isa"] = edgesdk::runtime_isa();
    d["kernels"] = edgesdk::active_kernels();
#if defined(__VERSION__)
    d["compiler"] = __VERSION__;
#endif
    return d;
  });
  // Widen uint8 to float32 into a caller-given array: no copies, GIL released for the loop.
  m.def(
      "u8_to_f32",
      [](py::array_t<uint8_t, py::array::c_style> src, py::array_t<float, py::array::c_style> out,
         float mean, float scale) {
        if (src.size() != out.size())
          throw py::value_error("u8_to_f32: src has " + std::to_string(src.size()) +
                                " elements, out has " + std::to_string(out.size()));
        const uint8_t* s = src.data();
        float* o = out.mutable_data();
        size_t n = static_cast<size_t>(src.size());
        py::gil_scoped_release release;
        edgesdk::u8_to_f32(s, o, n, mean, scale);
      },
      py::arg("src").noconvert(), py::arg("out").noconvert(), py::arg("mean") = 0.0f,
      py::arg("scale") = 1.0f);
}
