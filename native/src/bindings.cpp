// The only file that includes pybind11: the private module edgesdk._native.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <initializer_list>
#include <string>
#include <utility>

#include "edgesdk/core.h"
#include "edgesdk/preprocess.h"

namespace py = pybind11;

namespace {

// ---- preprocess: argument checks with the GIL held; errors become edgesdk.errors.EdgeSDKError

[[noreturn]] void fail(const std::string& msg) { throw edgesdk::PreprocessError(msg); }

std::string shape_str(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + "]";
}

template <class E>
E parse_choice(const char* field, const std::string& value, std::initializer_list<std::pair<const char*, E>> names) {
  std::string known;
  for (const auto& n : names) {
    if (value == n.first) return n.second;
    known += (known.empty() ? "" : ", ") + std::string(n.first);
  }
  fail(std::string("preprocess ") + field + ": '" + value + "' is not one of " + known);
}

edgesdk::ColorOrder parse_color(const char* field, const std::string& v) {
  return parse_choice<edgesdk::ColorOrder>(field, v, {{"bgr", edgesdk::ColorOrder::BGR}, {"rgb", edgesdk::ColorOrder::RGB}});
}

// The frame is read in place: packed pixels, any row stride; anything else is refused, not copied.
edgesdk::ImageView frame_view(const py::object& obj, edgesdk::ColorOrder order) {
  if (!py::isinstance<py::array>(obj))
    fail("frame: expected a numpy array HxWx3 uint8, got " + std::string(py::str(obj.get_type().attr("__name__"))));
  const auto a = py::reinterpret_borrow<py::array>(obj);
  if (a.ndim() != 3 || a.shape(2) != 3) fail("frame: expected shape HxWx3, got " + shape_str(a));
  if (a.dtype().kind() != 'u' || a.itemsize() != 1)
    fail("frame: expected dtype uint8, got " + std::string(py::str(a.dtype())));
  if (a.shape(0) == 0 || a.shape(1) == 0) fail("frame: empty image " + shape_str(a));
  if (a.shape(0) > (1 << 24) || a.shape(1) > (1 << 24)) fail("frame: too large " + shape_str(a));
  if (a.strides(1) != 3 || a.strides(2) != 1)
    fail("frame: pixels must be packed (strides[1] == 3, strides[2] == 1 bytes), got strides [" +
         std::to_string(a.strides(0)) + ", " + std::to_string(a.strides(1)) + ", " + std::to_string(a.strides(2)) +
         "]; pass np.ascontiguousarray(frame) if a copy is acceptable");
  return {static_cast<const uint8_t*>(a.data()), static_cast<int>(a.shape(1)), static_cast<int>(a.shape(0)),
          static_cast<ptrdiff_t>(a.strides(0)), order};
}

// The output is written in place: exactly the spec's shape and dtype, C-contiguous, writeable.
void* output_buffer(const py::object& obj, const edgesdk::PreprocessSpec& spec, const std::string& dtype) {
  const bool nchw = spec.layout == edgesdk::Layout::NCHW;
  const std::array<py::ssize_t, 4> want = {1, nchw ? 3 : spec.height, nchw ? spec.height : spec.width,
                                           nchw ? spec.width : 3};
  const std::string want_str = "[1, " + std::to_string(want[1]) + ", " + std::to_string(want[2]) + ", " +
                               std::to_string(want[3]) + "] " + dtype;
  if (!py::isinstance<py::array>(obj))
    fail("out: expected a numpy array " + want_str + ", got " + std::string(py::str(obj.get_type().attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  bool shape_ok = a.ndim() == 4;
  for (int i = 0; shape_ok && i < 4; ++i) shape_ok = a.shape(i) == want[i];
  if (!shape_ok || !a.dtype().equal(py::dtype(dtype)))
    fail("out: expected " + want_str + ", got " + shape_str(a) + " " + std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) fail("out: must be C-contiguous");
  if (!a.writeable()) fail("out: is read-only");
  return a.mutable_data();
}

bool overlaps(const edgesdk::ImageView& f, const void* out, size_t out_bytes) {
  const uint8_t* first = f.data + (f.row_stride < 0 ? (f.height - 1) * f.row_stride : 0);
  const uint8_t* last = f.data + (f.row_stride > 0 ? (f.height - 1) * f.row_stride : 0) + 3 * f.width;
  const uint8_t* o = static_cast<const uint8_t*>(out);
  return o < last && first < o + out_bytes;
}

py::object preprocess(const py::object& frame, const py::object& out, std::array<int, 2> size,
                      const std::string& resize, int pad, const std::string& color, std::array<double, 3> mean,
                      std::array<double, 3> std_, const std::string& layout, const std::string& dtype,
                      const std::string& interp, int threads, const std::string& frame_color) {
  using namespace edgesdk;
  PreprocessSpec spec;
  if (size[0] <= 0 || size[1] <= 0)
    fail("preprocess size: expected [width, height] > 0, got [" + std::to_string(size[0]) + ", " +
         std::to_string(size[1]) + "]");
  spec.width = size[0];
  spec.height = size[1];
  spec.resize = parse_choice<ResizeMode>("resize", resize, {{"letterbox", ResizeMode::Letterbox}, {"stretch", ResizeMode::Stretch}});
  if (pad < 0 || pad > 255) fail("preprocess pad: expected 0..255, got " + std::to_string(pad));
  spec.pad = static_cast<uint8_t>(pad);
  spec.color = parse_color("color", color);
  for (int c = 0; c < 3; ++c) spec.mean[c] = mean[c], spec.std[c] = std_[c];
  spec.layout = parse_choice<Layout>("layout", layout, {{"nchw", Layout::NCHW}, {"nhwc", Layout::NHWC}});
  spec.dtype = parse_choice<DType>("dtype", dtype, {{"float32", DType::Float32}, {"float16", DType::Float16}, {"uint8", DType::UInt8}});
  spec.interp = parse_choice<Interp>("interp", interp, {{"bilinear", Interp::Bilinear}, {"nearest", Interp::Nearest}});
  const ImageView view = frame_view(frame, parse_color("frame_color", frame_color));
  void* dst = output_buffer(out, spec, dtype);
  if (overlaps(view, dst, output_bytes(spec))) fail("out: shares memory with the frame");
  {
    py::gil_scoped_release release;
    edgesdk::preprocess(view, spec, dst, threads);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "edgesdk native core (private; use the edgesdk package)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const edgesdk::PreprocessError& e) {
      py::object cls = py::module_::import("edgesdk.errors").attr("EdgeSDKError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });
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

  // Fused frame -> model input (see edgesdk/preprocess.py for the specification): reads the frame
  // and writes `out` in place, GIL released for the kernel; returns `out`.
  m.def("preprocess", &preprocess, py::arg("frame"), py::arg("out"), py::kw_only(), py::arg("size"),
        py::arg("resize"), py::arg("pad"), py::arg("color"), py::arg("mean"), py::arg("std"), py::arg("layout"),
        py::arg("dtype"), py::arg("interp") = "bilinear", py::arg("threads") = 1, py::arg("frame_color") = "bgr");
  m.def("preprocess_kernels", &edgesdk::preprocess_kernels, "kernel set preprocess uses: avx2, neon or scalar");
  m.def("set_kernels", &edgesdk::set_preprocess_kernels, py::arg("name"),
        "test hook: force the preprocess kernel set (scalar, avx2, neon) or 'auto'");
}
