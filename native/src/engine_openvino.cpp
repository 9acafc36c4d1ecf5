// The OpenVINO engine (built into libedgesdk_openvino.so, loaded by engine.cpp): one compiled model
// shared by all threads, one infer request per state. Frames are preprocessed into the request's
// own input tensor; outputs are tensors the request wrote and nobody reuses afterwards.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include <openvino/openvino.hpp>

#include "edgesdk/engine.h"
#include "engine_shapes.h"

namespace edgesdk {
namespace {

std::string first_line(const std::string& s) {
  size_t start = s.find_first_not_of(" \n\t");
  if (start == std::string::npos) return "unknown error";
  // OpenVINO prefixes messages with a source location line: keep the first line that says something
  for (size_t pos = start; pos < s.size();) {
    size_t end = s.find('\n', pos);
    std::string line = s.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    if (line.find("Exception from") == std::string::npos && line.find_first_not_of(" \t") != std::string::npos)
      return line;
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return s.substr(start, s.find('\n', start) - start);
}

ElementType from_ov(const ov::element::Type& t, const std::string& what) {
  if (t == ov::element::f32) return ElementType::F32;
  if (t == ov::element::f16) return ElementType::F16;
  if (t == ov::element::u8) return ElementType::U8;
  if (t == ov::element::i8) return ElementType::I8;
  if (t == ov::element::i32) return ElementType::I32;
  if (t == ov::element::i64) return ElementType::I64;
  throw EngineError(what + ": element type " + t.get_type_name() + " is not supported by the native engine");
}

ov::element::Type to_ov(ElementType t) {
  switch (t) {
    case ElementType::F32: return ov::element::f32;
    case ElementType::F16: return ov::element::f16;
    case ElementType::U8: return ov::element::u8;
    case ElementType::I8: return ov::element::i8;
    case ElementType::I32: return ov::element::i32;
    case ElementType::I64: return ov::element::i64;
  }
  return ov::element::dynamic;
}

ov::Shape to_shape(const std::vector<int64_t>& s) { return ov::Shape(s.begin(), s.end()); }

size_t port_index(const std::vector<ov::Output<const ov::Node>>& ports, const std::string& name, size_t position,
                  const std::string& xml) {
  for (size_t i = 0; i < ports.size(); ++i)
    if (ports[i].get_names().count(name)) return i;
  if (position < ports.size()) return position;
  throw EngineError(xml + ": no tensor named " + name + " in the IR");
}

struct Port {
  TensorSpec spec;
  size_t index = 0;
  bool is_static = false;
};

class OvModel final : public EngineModel {
 public:
  explicit OvModel(const OpenVINOConfig& cfg) : xml_(cfg.xml) {
    ov::AnyMap props;
    for (const auto& kv : cfg.properties) props[kv.first] = kv.second;
    const std::vector<std::string> devices = core_.get_available_devices();
    if (std::find(devices.begin(), devices.end(), cfg.device) == devices.end()) {
      std::string have;
      for (const auto& d : devices) have += (have.empty() ? "" : ", ") + d;
      throw EngineUnavailable("OpenVINO device '" + cfg.device + "' is not available here; available: " + have);
    }
    std::shared_ptr<ov::Model> model;
    try {
      model = core_.read_model(cfg.xml);
      compiled_ = core_.compile_model(model, cfg.device, props);
    } catch (const ov::Exception& e) {
      throw EngineError(cfg.xml + ": OpenVINO cannot load it: " + first_line(e.what()));
    }
    threads_ = cfg.threads;
    const auto& ins = compiled_.inputs();
    const auto& outs = compiled_.outputs();
    if (cfg.inputs.size() != ins.size() || cfg.outputs.size() != outs.size())
      throw EngineError(cfg.xml + ": the IR has " + std::to_string(ins.size()) + " inputs and " +
                        std::to_string(outs.size()) + " outputs, the artifact lists " + std::to_string(cfg.inputs.size()) +
                        " and " + std::to_string(cfg.outputs.size()));
    auto ports = [&](const std::vector<TensorSpec>& specs, const std::vector<std::string>& names,
                     const std::vector<ov::Output<const ov::Node>>& list, std::vector<TensorSpec>& out_specs) {
      std::vector<Port> result;
      for (size_t k = 0; k < specs.size(); ++k) {
        Port p;
        p.index = port_index(list, k < names.size() && !names[k].empty() ? names[k] : specs[k].name, k, cfg.xml);
        p.spec = specs[k];
        p.spec.type = from_ov(list[p.index].get_element_type(), "tensor '" + specs[k].name + "'");
        p.is_static = list[p.index].get_partial_shape().is_static();
        out_specs.push_back(p.spec);
        result.push_back(std::move(p));
      }
      return result;
    };
    in_ = ports(cfg.inputs, cfg.input_ports, ins, inputs_);
    out_ = ports(cfg.outputs, cfg.output_ports, outs, outputs_);
  }

  const char* backend() const override { return "openvino"; }

  std::string xml_;
  ov::Core core_;
  mutable ov::CompiledModel compiled_;  // only create_infer_request (thread-safe) after construction
  std::vector<Port> in_, out_;

 protected:
  std::unique_ptr<EngineState> make_state(std::shared_ptr<const EngineModel> self) const override;
};

// An output tensor held by whoever reads it, with the model that made it.
struct TensorOwner {
  std::shared_ptr<const EngineModel> model;
  ov::Tensor tensor;
};

class OvState final : public EngineState {
 public:
  explicit OvState(std::shared_ptr<const EngineModel> m)
      : EngineState(m), model(static_cast<const OvModel&>(*m)), set_(model.in_.size(), false),
        read_(model.in_.size(), nullptr), outs_(model.out_.size()) {
    try {
      req_ = model.compiled_.create_infer_request();
      for (const Port& p : model.in_) own_.push_back(p.is_static ? req_.get_input_tensor(p.index) : ov::Tensor());
    } catch (const ov::Exception& e) {
      throw EngineError(model.xml_ + ": OpenVINO cannot make an infer request: " + first_line(e.what()));
    }
  }

  void set_input(size_t index, const Tensor& t) override {
    const Port& p = in(index);
    if (t.type != p.spec.type)
      throw EngineError("input '" + p.spec.name + "': expected " + element_name(p.spec.type) + ", got " + element_name(t.type));
    if (!shape_fits(p.spec.shape, t.shape))
      throw EngineError("input '" + p.spec.name + "': expected shape " + dims_str(p.spec.shape) + ", got " + dims_str(t.shape));
    try {
      if (t.contiguous()) {  // read in place
        req_.set_input_tensor(p.index, ov::Tensor(to_ov(t.type), to_shape(t.shape), t.data));
      } else {  // OpenVINO wants C order (its strided tensors take no negative or Fortran strides): copied here
        ov::Tensor& own = own_tensor(index, t.shape);
        t.copy_to(own.data());
        count_copy(t.count() * element_size(t.type));
        req_.set_input_tensor(p.index, own);
      }
    } catch (const ov::Exception& e) {
      throw EngineError("input '" + p.spec.name + "': " + first_line(e.what()));
    }
    set_[index] = true;
  }

  void set_frame(size_t index, const ImageView& frame, const PreprocessSpec& spec, int threads) override {
    const Port& p = in(index);
    const ElementType want = spec.dtype == DType::Float32 ? ElementType::F32
                             : spec.dtype == DType::Float16 ? ElementType::F16 : ElementType::U8;
    if (want != p.spec.type)
      throw PreprocessError("input '" + p.spec.name + "' takes " + element_name(p.spec.type) +
                            ", the preprocessing spec gives " + element_name(want));
    const bool nchw = spec.layout == Layout::NCHW;
    const std::vector<int64_t> shape = nchw ? std::vector<int64_t>{1, 3, spec.height, spec.width}
                                            : std::vector<int64_t>{1, spec.height, spec.width, 3};
    if (!shape_fits(p.spec.shape, shape))
      throw PreprocessError("input '" + p.spec.name + "' has shape " + dims_str(p.spec.shape) +
                            "; the preprocessing spec gives " + dims_str(shape));
    ov::Tensor& own = own_tensor(index, shape);
    preprocess(frame, spec, own.data(), threads);  // straight into the request's input tensor
    try {
      req_.set_input_tensor(p.index, own);
    } catch (const ov::Exception& e) {
      throw EngineError("input '" + p.spec.name + "': " + first_line(e.what()));
    }
    set_[index] = true;
  }

  void run() override {
    for (size_t i = 0; i < set_.size(); ++i)
      if (!set_[i]) throw EngineError("input '" + model.in_[i].spec.name + "' was not set");
    try {
      for (size_t i = 0; i < outs_.size(); ++i) {
        const Port& p = model.out_[i];
        if (!p.is_static) continue;
        // A tensor handed out earlier belongs to its reader now: the request writes a fresh one.
        if (!outs_[i] || outs_[i].use_count() > 1) {
          auto owner = std::make_shared<TensorOwner>();
          owner->model = model_;
          owner->tensor = outs_[i] ? ov::Tensor(to_ov(p.spec.type), outs_[i]->tensor.get_shape())
                                   : req_.get_output_tensor(p.index);
          req_.set_output_tensor(p.index, owner->tensor);
          outs_[i] = std::move(owner);
        }
      }
      req_.infer();
      for (size_t i = 0; i < set_.size(); ++i) read_[i] = req_.get_input_tensor(model.in_[i].index).data();
      for (size_t i = 0; i < outs_.size(); ++i) {
        if (model.out_[i].is_static) continue;
        // dynamic shapes: the request reallocates this tensor as it likes, so the reader gets a copy
        const ov::Tensor t = req_.get_output_tensor(model.out_[i].index);
        auto owner = std::make_shared<TensorOwner>();
        owner->model = model_;
        owner->tensor = ov::Tensor(t.get_element_type(), t.get_shape());
        t.copy_to(owner->tensor);
        count_copy(t.get_byte_size());
        outs_[i] = std::move(owner);
      }
    } catch (const ov::Exception& e) {
      throw EngineError(model.xml_ + ": OpenVINO failed to run: " + first_line(e.what()));
    }
    std::fill(set_.begin(), set_.end(), false);
  }

  Tensor output(size_t index) override {
    if (index >= outs_.size()) throw EngineError("output index " + std::to_string(index) + " out of range");
    if (!outs_[index]) throw EngineError("output '" + model.out_[index].spec.name + "': run() first");
    ov::Tensor& ot = outs_[index]->tensor;
    Tensor t;
    t.data = ot.data();
    t.type = from_ov(ot.get_element_type(), "output '" + model.out_[index].spec.name + "'");
    const ov::Shape shape = ot.get_shape();
    const ov::Strides strides = ot.get_strides();
    t.shape.assign(shape.begin(), shape.end());
    t.strides.assign(strides.begin(), strides.end());
    t.owner = outs_[index];
    return t;
  }

  const void* input_data(size_t index) const override {
    if (index >= read_.size()) throw EngineError("input index " + std::to_string(index) + " out of range");
    return read_[index];
  }

 private:
  const Port& in(size_t index) const {
    if (index >= model.in_.size()) throw EngineError("input index " + std::to_string(index) + " out of range");
    return model.in_[index];
  }

  ov::Tensor& own_tensor(size_t index, const std::vector<int64_t>& shape) {
    ov::Tensor& t = own_[index];
    if (!t || t.get_shape() != to_shape(shape)) t = ov::Tensor(to_ov(model.in_[index].spec.type), to_shape(shape));
    return t;
  }

  const OvModel& model;
  ov::InferRequest req_;
  std::vector<ov::Tensor> own_;  // the request's own input tensors (frames are written into them)
  std::vector<bool> set_;
  std::vector<const void*> read_;
  std::vector<std::shared_ptr<TensorOwner>> outs_;
};

std::unique_ptr<EngineState> OvModel::make_state(std::shared_ptr<const EngineModel> self) const {
  return std::unique_ptr<EngineState>(new OvState(std::move(self)));
}

}  // namespace
}  // namespace edgesdk

// The two entry points engine.cpp looks up. Errors come back as text: 1 the model, 2 the engine.
extern "C" __attribute__((visibility("default"))) const char* edgesdk_openvino_abi() { return EDGESDK_VERSION; }

extern "C" __attribute__((visibility("default"))) int edgesdk_openvino_open(
    const edgesdk::OpenVINOConfig* config, std::shared_ptr<const edgesdk::EngineModel>* out, std::string* error) {
  try {
    *out = std::make_shared<edgesdk::OvModel>(*config);
    return 0;
  } catch (const edgesdk::EngineError& e) {
    *error = e.what();
    return 1;
  } catch (const edgesdk::EngineUnavailable& e) {
    *error = e.what();
    return 2;
  } catch (const std::exception& e) {
    *error = e.what();
    return 2;
  }
}
