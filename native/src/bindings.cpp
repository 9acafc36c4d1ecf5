// The only file that includes pybind11: the private module edgesdk._native.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <atomic>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "edgesdk/core.h"
#include "edgesdk/engine.h"
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
    fail("frame: expected a numpy array HxWx3 uint8, got " +
         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
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
    fail("out: expected a numpy array " + want_str + ", got " +
         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
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

edgesdk::PreprocessSpec make_spec(std::array<int, 2> size, const std::string& resize, int pad, const std::string& color,
                                  std::array<double, 3> mean, std::array<double, 3> std_, const std::string& layout,
                                  const std::string& dtype, const std::string& interp) {
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
  return spec;
}

py::object preprocess(const py::object& frame, const py::object& out, std::array<int, 2> size,
                      const std::string& resize, int pad, const std::string& color, std::array<double, 3> mean,
                      std::array<double, 3> std_, const std::string& layout, const std::string& dtype,
                      const std::string& interp, int threads, const std::string& frame_color) {
  using namespace edgesdk;
  const PreprocessSpec spec = make_spec(size, resize, pad, color, mean, std_, layout, dtype, interp);
  const ImageView view = frame_view(frame, parse_color("frame_color", frame_color));
  void* dst = output_buffer(out, spec, dtype);
  if (overlaps(view, dst, output_bytes(spec))) fail("out: shares memory with the frame");
  {
    py::gil_scoped_release release;
    edgesdk::preprocess(view, spec, dst, threads);
  }
  return out;
}

// ---- engines: arrays in and out without copies; the GIL is released while a state runs.

edgesdk::ElementType element_type(const py::array& a, const std::string& what) {
  using edgesdk::ElementType;
  const char kind = a.dtype().kind();
  const auto size = a.itemsize();
  if (kind == 'f' && size == 4) return ElementType::F32;
  if (kind == 'f' && size == 2) return ElementType::F16;
  if (kind == 'u' && size == 1) return ElementType::U8;
  if (kind == 'i' && size == 1) return ElementType::I8;
  if (kind == 'i' && size == 4) return ElementType::I32;
  if (kind == 'i' && size == 8) return ElementType::I64;
  throw edgesdk::EngineError(what + ": dtype " + std::string(py::str(a.dtype())) + " is not supported");
}

edgesdk::ElementType element_type(const std::string& name) {
  using edgesdk::ElementType;
  for (ElementType t : {ElementType::F32, ElementType::F16, ElementType::U8, ElementType::I8, ElementType::I32,
                        ElementType::I64})
    if (name == edgesdk::element_name(t)) return t;
  throw edgesdk::EngineError("unsupported tensor dtype '" + name + "'");
}

// A borrowed view of a numpy array (the caller keeps the array referenced while it is used).
edgesdk::Tensor tensor_view(const py::array& a, const std::string& what) {
  edgesdk::Tensor t;
  t.type = element_type(a, what);
  t.data = const_cast<void*>(a.data());
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    t.shape.push_back(a.shape(i));
    t.strides.push_back(a.strides(i));
  }
  return t;
}

// A numpy array over engine memory; its base (a capsule) holds the engine buffer's owner.
py::array to_array(const edgesdk::Tensor& t) {
  auto* owner = new std::shared_ptr<void>(t.owner);
  py::capsule base(owner, [](void* p) { delete static_cast<std::shared_ptr<void>*>(p); });
  std::vector<py::ssize_t> shape(t.shape.begin(), t.shape.end()), strides(t.strides.begin(), t.strides.end());
  return py::array(py::dtype(edgesdk::element_name(t.type)), shape, strides, t.data, base);
}

std::vector<edgesdk::TensorSpec> tensor_specs(const std::vector<std::tuple<std::string, std::vector<int64_t>, std::string>>& in) {
  std::vector<edgesdk::TensorSpec> out;
  for (const auto& [name, shape, dtype] : in) out.push_back({name, shape, element_type(dtype)});
  return out;
}

py::list specs_list(const std::vector<edgesdk::TensorSpec>& specs) {
  py::list out;
  for (const auto& s : specs) out.append(py::make_tuple(s.name, s.shape, edgesdk::element_name(s.type)));
  return out;
}

// One thread's working memory. A state used from two threads at once is refused, not corrupted.
class PyState {
 public:
  explicit PyState(std::shared_ptr<const edgesdk::EngineModel> model) : model_(std::move(model)), state_(model_->new_state()) {}

  py::list run(const py::list& feeds) {
    const auto& inputs = model_->inputs();
    if (feeds.size() != inputs.size())
      throw edgesdk::EngineError("expected " + std::to_string(inputs.size()) + " inputs, got " + std::to_string(feeds.size()));
    std::vector<py::array> arrays;  // referenced here until the run is over
    std::vector<edgesdk::Tensor> views;
    for (size_t i = 0; i < inputs.size(); ++i) {
      py::object f = feeds[i];
      if (!py::isinstance<py::array>(f))
        throw edgesdk::EngineError("input '" + inputs[i].name + "': expected a numpy array, got " +
                                   std::string(py::str(py::type::handle_of(f).attr("__name__"))));
      arrays.push_back(py::reinterpret_borrow<py::array>(f));
      views.push_back(tensor_view(arrays.back(), "input '" + inputs[i].name + "'"));
    }
    std::vector<edgesdk::Tensor> outs;
    {
      Busy busy(*this);
      py::gil_scoped_release release;
      for (size_t i = 0; i < views.size(); ++i) state_->set_input(i, views[i]);
      state_->run();
      outs = collect();
    }
    return arrays_of(outs);
  }

  // frame -> preprocess into the engine's input -> run, all without the GIL.
  py::list run_frame(const py::object& frame, const edgesdk::PreprocessSpec& spec, int threads) {
    if (model_->inputs().size() != 1)
      throw edgesdk::EngineError("run_frame needs a model with one input, this one has " +
                                 std::to_string(model_->inputs().size()));
    if (threads < 1) fail("preprocess threads: expected >= 1, got " + std::to_string(threads));
    const edgesdk::ImageView view = frame_view(frame, edgesdk::ColorOrder::BGR);
    std::vector<edgesdk::Tensor> outs;
    {
      Busy busy(*this);
      py::gil_scoped_release release;
      state_->set_frame(0, view, spec, threads);
      state_->run();
      outs = collect();
    }
    return arrays_of(outs);
  }

  uintptr_t input_pointer(size_t index) const { return reinterpret_cast<uintptr_t>(state_->input_data(index)); }

 private:
  struct Busy {
    explicit Busy(PyState& s) : s(s) {
      if (s.busy_.exchange(true))
        throw edgesdk::EngineError("a native engine state is in use by another thread (use one state per thread)");
    }
    ~Busy() { s.busy_.store(false); }
    PyState& s;
  };

  std::vector<edgesdk::Tensor> collect() {
    std::vector<edgesdk::Tensor> outs;
    for (size_t i = 0; i < model_->outputs().size(); ++i) outs.push_back(state_->output(i));
    return outs;
  }

  static py::list arrays_of(const std::vector<edgesdk::Tensor>& outs) {
    py::list result;
    for (const auto& t : outs) result.append(to_array(t));
    return result;
  }

  std::shared_ptr<const edgesdk::EngineModel> model_;
  std::unique_ptr<edgesdk::EngineState> state_;
  std::atomic<bool> busy_{false};
};

struct PyEngine {
  std::shared_ptr<const edgesdk::EngineModel> model;
};

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "edgesdk native core (private; use the edgesdk package)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const edgesdk::PreprocessError& e) {
      py::object cls = py::module_::import("edgesdk.errors").attr("EdgeSDKError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const edgesdk::EngineError& e) {
      py::object cls = py::module_::import("edgesdk.errors").attr("ModelError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const edgesdk::EngineUnavailable& e) {
      py::object cls = py::module_::import("edgesdk.errors").attr("BackendUnavailable");
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
    d["engines"] = edgesdk::engines();
    d["ncnn"] = edgesdk::ncnn_build();
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

  // Engines (see native/include/edgesdk/engine.h): an Engine is immutable and shared by all
  // threads; each thread runs through its own State.
  m.def("engines", &edgesdk::engines, "engines built into this module");
  py::class_<edgesdk::PreprocessSpec>(m, "PreprocessSpec")
      .def(py::init(&make_spec), py::kw_only(), py::arg("size"), py::arg("resize"), py::arg("pad"), py::arg("color"),
           py::arg("mean"), py::arg("std"), py::arg("layout"), py::arg("dtype"), py::arg("interp") = "bilinear");
  py::class_<PyState>(m, "State")
      .def("run", &PyState::run, py::arg("feeds"), "inputs in model order -> outputs (arrays over engine memory)")
      .def("run_frame", &PyState::run_frame, py::arg("frame"), py::arg("spec"), py::arg("threads") = 1,
           "a BGR uint8 frame preprocessed straight into the engine's input, run -> outputs")
      .def("input_pointer", &PyState::input_pointer, py::arg("index"),
           "address the engine read input `index` from in the last run");
  py::class_<PyEngine>(m, "Engine")
      .def_static(
          "open_ncnn",
          [](const std::string& param, const std::string& bin,
             const std::vector<std::tuple<std::string, std::string, int, std::vector<int64_t>, std::string>>& inputs,
             const std::vector<std::tuple<std::string, std::string, int, std::vector<int64_t>, std::string>>& outputs,
             bool fp16, bool fp16_arithmetic, bool int8, int threads, int cpu_powersave) {
            edgesdk::NcnnConfig cfg;
            cfg.param = param;
            cfg.bin = bin;
            for (const auto& [name, blob, axis, shape, dtype] : inputs)
              cfg.inputs.push_back({name, blob, axis, shape, element_type(dtype)});
            for (const auto& [name, blob, axis, shape, dtype] : outputs)
              cfg.outputs.push_back({name, blob, axis, shape, element_type(dtype)});
            cfg.fp16 = fp16;
            cfg.fp16_arithmetic = fp16_arithmetic;
            cfg.int8 = int8;
            cfg.threads = threads;
            cfg.cpu_powersave = cpu_powersave;
            py::gil_scoped_release release;
            return PyEngine{edgesdk::open_ncnn(cfg)};
          },
          py::kw_only(), py::arg("param"), py::arg("bin"), py::arg("inputs"), py::arg("outputs"), py::arg("fp16"),
          py::arg("fp16_arithmetic") = false, py::arg("int8") = false, py::arg("threads") = 0,
          py::arg("cpu_powersave") = 0,
          "inputs/outputs: (onnx name, ncnn blob, batch axis or -1, shape with -1 dynamic, dtype)")
      .def_static(
          "open_openvino",
          [](const std::string& xml, const std::string& device, const std::vector<std::pair<std::string, std::string>>& properties,
             const std::vector<std::tuple<std::string, std::vector<int64_t>, std::string>>& inputs,
             const std::vector<std::tuple<std::string, std::vector<int64_t>, std::string>>& outputs,
             const std::vector<std::string>& input_ports, const std::vector<std::string>& output_ports, int threads,
             const std::string& plugin) {
            edgesdk::OpenVINOConfig cfg;
            cfg.xml = xml;
            cfg.device = device;
            cfg.properties = properties;
            cfg.inputs = tensor_specs(inputs);
            cfg.outputs = tensor_specs(outputs);
            cfg.input_ports = input_ports;
            cfg.output_ports = output_ports;
            cfg.threads = threads;
            cfg.plugin = plugin;
            py::gil_scoped_release release;
            return PyEngine{edgesdk::open_openvino(cfg)};
          },
          py::kw_only(), py::arg("xml"), py::arg("device"), py::arg("properties"), py::arg("inputs"), py::arg("outputs"),
          py::arg("input_ports"), py::arg("output_ports"), py::arg("threads") = 0, py::arg("plugin") = "",
          "properties: OpenVINO compile properties as strings; inputs/outputs: (onnx name, shape, dtype)")
      .def("new_state", [](const PyEngine& e) { return std::make_unique<PyState>(e.model); })
      .def_property_readonly("backend", [](const PyEngine& e) { return std::string(e.model->backend()); })
      .def_property_readonly("threads", [](const PyEngine& e) { return e.model->threads(); })
      .def_property_readonly("copies", [](const PyEngine& e) { return e.model->copies(); },
                             "bytes the engine's states copied on the way in or out")
      .def_property_readonly("inputs", [](const PyEngine& e) { return specs_list(e.model->inputs()); })
      .def_property_readonly("outputs", [](const PyEngine& e) { return specs_list(e.model->outputs()); });
}
