// The ncnn engine: one ncnn::Net per model (read-only after loading; every run makes its own
// Extractor), per-thread input Mats owned by ncnn that the preprocessing kernel writes into, and
// outputs handed out as the extracted Mats themselves.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "edgesdk/engine.h"
#include "engine_shapes.h"

#if defined(EDGESDK_WITH_NCNN)
#include "cpu.h"
#include "layer.h"
#include "net.h"

namespace edgesdk {
namespace {

// Layers that only read their input blob and always write a new output. A Mat over the caller's
// memory has no reference count: a layer running in place would dereference that missing count (a
// crash) and write into the caller's array, and many layers pass their input on as an alias. So a
// caller's buffer is read in place only when every consumer is one of these.
bool reads_only(const std::string& type) {
  static const char* const kinds[] = {"Convolution", "ConvolutionDepthWise", "Convolution1D", "Convolution3D",
                                      "Deconvolution", "DeconvolutionDepthWise", "InnerProduct"};
  return std::any_of(std::begin(kinds), std::end(kinds), [&](const char* k) { return type == k; });
}

bool zero_copy_safe(const ncnn::Net& net, int blob) {
  for (const ncnn::Layer* layer : net.layers()) {
    if (std::find(layer->bottoms.begin(), layer->bottoms.end(), blob) == layer->bottoms.end()) continue;
    if (layer->type == "Split") {
      for (int top : layer->tops)
        if (!zero_copy_safe(net, top)) return false;
    } else if (!reads_only(layer->type)) {
      return false;
    }
  }
  return true;
}

// Element strides (not bytes) of a Mat as an array in ncnn's dim order (c, d, h, w).
std::vector<int64_t> mat_shape(const ncnn::Mat& m) {
  switch (m.dims) {
    case 1: return {m.w};
    case 2: return {m.h, m.w};
    case 3: return {m.c, m.h, m.w};
    default: return {m.c, m.d, m.h, m.w};
  }
}

std::vector<int64_t> mat_strides(const ncnn::Mat& m) {
  const int64_t w = m.w, hw = static_cast<int64_t>(m.w) * m.h, cs = static_cast<int64_t>(m.cstep);
  switch (m.dims) {
    case 1: return {1};
    case 2: return {w, 1};
    case 3: return {cs, w, 1};
    default: return {cs, hw, w, 1};
  }
}

// An ncnn-owned float Mat of `shape` (rank 1..4, ncnn order).
ncnn::Mat new_mat(const std::vector<int64_t>& s) {
  ncnn::Mat m;
  switch (s.size()) {
    case 1: m.create(static_cast<int>(s[0]), size_t(4)); break;
    case 2: m.create(static_cast<int>(s[1]), static_cast<int>(s[0]), size_t(4)); break;
    case 3: m.create(static_cast<int>(s[2]), static_cast<int>(s[1]), static_cast<int>(s[0]), size_t(4)); break;
    default:
      m.create(static_cast<int>(s[3]), static_cast<int>(s[2]), static_cast<int>(s[1]), static_cast<int>(s[0]), size_t(4));
  }
  return m;
}

// A Mat over caller memory, C order, when ncnn's channel step matches it (else an empty Mat).
ncnn::Mat wrap_mat(const std::vector<int64_t>& s, void* data) {
  ncnn::Mat m;
  switch (s.size()) {
    case 1: m = ncnn::Mat(static_cast<int>(s[0]), data, 4u); break;
    case 2: m = ncnn::Mat(static_cast<int>(s[1]), static_cast<int>(s[0]), data, 4u); break;
    case 3: m = ncnn::Mat(static_cast<int>(s[2]), static_cast<int>(s[1]), static_cast<int>(s[0]), data, 4u); break;
    default:
      m = ncnn::Mat(static_cast<int>(s[3]), static_cast<int>(s[2]), static_cast<int>(s[1]), static_cast<int>(s[0]), data, 4u);
  }
  size_t plane = 1;
  for (size_t i = 1; i < s.size(); ++i) plane *= static_cast<size_t>(s[i]);
  if (s.size() >= 3 && m.cstep != plane) return ncnn::Mat();
  return m;
}

// Strided float source (element strides) -> Mat, honouring the Mat's channel step.
void copy_into(ncnn::Mat& m, const float* src, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
  const std::vector<int64_t> dst_strides = mat_strides(m);
  std::vector<int64_t> idx(shape.size(), 0);
  const size_t last = shape.size() - 1;
  float* dst = static_cast<float*>(m.data);
  for (;;) {
    int64_t s = 0, d = 0;
    for (size_t k = 0; k < last; ++k) s += idx[k] * strides[k], d += idx[k] * dst_strides[k];
    for (int64_t x = 0; x < shape[last]; ++x) dst[d + x] = src[s + x * strides[last]];
    size_t k = last;
    while (k > 0 && ++idx[k - 1] == shape[k - 1]) idx[--k] = 0;
    if (k == 0) return;
  }
}

struct Blob {
  NcnnBlob spec;
  int index = -1;          // ncnn blob index
  bool zero_copy = false;  // inputs: the caller's buffer may be read in place
};

class NcnnModel final : public EngineModel {
 public:
  explicit NcnnModel(const NcnnConfig& cfg) {
    // Options before load_param: layers pick their kernels and weight storage at load. fp32 must not
    // be demoted to fp16 storage (ncnn's default); the same settings as the Python NcnnSession.
    net_.opt.use_fp16_storage = cfg.fp16;
    net_.opt.use_fp16_packed = cfg.fp16;
    net_.opt.use_fp16_arithmetic = cfg.fp16 && cfg.fp16_arithmetic;
    net_.opt.use_bf16_storage = false;
    net_.opt.use_int8_inference = cfg.int8;
    if (cfg.threads > 0) net_.opt.num_threads = cfg.threads;
    if (cfg.cpu_powersave) ncnn::set_cpu_powersave(cfg.cpu_powersave);
    threads_ = net_.opt.num_threads;
    if (net_.load_param(cfg.param.c_str()) != 0) throw EngineError(cfg.param + ": ncnn could not load this param file");
    if (net_.load_model(cfg.bin.c_str()) != 0)
      throw EngineError(cfg.bin + ": ncnn could not load these weights (do they belong to " + cfg.param + "?)");
    auto find = [&](const NcnnBlob& b) {
      const auto& blobs = net_.blobs();
      for (size_t i = 0; i < blobs.size(); ++i)
        if (blobs[i].name == b.blob) return static_cast<int>(i);
      throw EngineError(cfg.param + ": no blob named " + b.blob + " (for " + b.name + ")");
    };
    for (const NcnnBlob& b : cfg.inputs) {
      if (b.type != ElementType::F32) throw EngineError("input '" + b.name + "': the ncnn engine takes float32 inputs");
      const int index = find(b);
      in_.push_back({b, index, zero_copy_safe(net_, index)});
      inputs_.push_back({b.name, b.shape, b.type});
    }
    for (const NcnnBlob& b : cfg.outputs) {
      out_.push_back({b, find(b), false});
      outputs_.push_back({b.name, b.shape, ElementType::F32});
    }
  }

  const char* backend() const override { return "ncnn"; }

  ncnn::Net net_;
  std::vector<Blob> in_, out_;

 protected:
  std::unique_ptr<EngineState> make_state(std::shared_ptr<const EngineModel> self) const override;

  friend class NcnnState;
};

// An extracted Mat kept alive with the Net whose pool allocator owns its memory.
struct MatOwner {
  std::shared_ptr<const EngineModel> model;  // declared first: released after the Mat
  ncnn::Mat mat;
};

class NcnnState final : public EngineState {
 public:
  explicit NcnnState(std::shared_ptr<const EngineModel> m)
      : EngineState(m), model(static_cast<const NcnnModel&>(*m)), mats_(model.in_.size()), own_(model.in_.size()),
        read_(model.in_.size(), nullptr), outs_(model.out_.size()) {}

  void set_input(size_t index, const Tensor& t) override {
    const Blob& b = in(index);
    if (t.type != ElementType::F32)
      throw EngineError("input '" + b.spec.name + "': expected float32, got " + element_name(t.type));
    if (!shape_fits(b.spec.shape, t.shape))
      throw EngineError("input '" + b.spec.name + "': expected shape " + dims_str(b.spec.shape) + ", got " + dims_str(t.shape));
    std::vector<int64_t> shape = t.shape, strides = t.strides;
    if (b.spec.batch_axis >= 0) {
      if (t.shape[b.spec.batch_axis] != 1)
        throw EngineError("input '" + b.spec.name + "': ncnn runs batch 1 only, got batch " + std::to_string(t.shape[b.spec.batch_axis]));
      shape.erase(shape.begin() + b.spec.batch_axis);
      strides.erase(strides.begin() + b.spec.batch_axis);
    }
    if (shape.empty() || shape.size() > 4)
      throw EngineError("input '" + b.spec.name + "': ncnn takes 1 to 4 dims besides the batch, got " + dims_str(t.shape));
    if (b.zero_copy && t.contiguous()) {
      ncnn::Mat m = wrap_mat(shape, t.data);
      if (!m.empty()) {
        mats_[index] = m;
        return;
      }
    }
    // ncnn owns a copy: strided input, a channel step ncnn pads, or a first layer that may run in place
    ncnn::Mat& own = own_mat(index, shape);
    for (int64_t& s : strides) s /= 4;
    copy_into(own, static_cast<const float*>(t.data), shape, strides);
    count_copy(t.count() * 4);
    mats_[index] = own;
  }

  void set_frame(size_t index, const ImageView& frame, const PreprocessSpec& spec, int threads) override {
    const Blob& b = in(index);
    if (spec.dtype != DType::Float32) throw PreprocessError("preprocess dtype: the ncnn engine takes float32 inputs");
    const bool nchw = spec.layout == Layout::NCHW;
    const std::vector<int64_t> full = nchw ? std::vector<int64_t>{1, 3, spec.height, spec.width}
                                           : std::vector<int64_t>{1, spec.height, spec.width, 3};
    if (b.spec.batch_axis != 0 || !shape_fits(b.spec.shape, full))
      throw PreprocessError("input '" + b.spec.name + "' has shape " + dims_str(b.spec.shape) +
                            "; the preprocessing spec gives " + dims_str(full));
    const std::vector<int64_t> shape(full.begin() + 1, full.end());
    ncnn::Mat& own = own_mat(index, shape);
    const size_t plane = static_cast<size_t>(shape[1]) * shape[2];
    if (own.cstep == plane) {
      preprocess(frame, spec, own.data, threads);  // straight into the memory ncnn reads
    } else {  // ncnn pads each channel to 16 bytes: write planes elsewhere, then move them
      scratch_.resize(plane * 3);
      preprocess(frame, spec, scratch_.data(), threads);
      for (int c = 0; c < 3; ++c) std::memcpy(own.channel(c).data, scratch_.data() + c * plane, plane * 4);
      count_copy(plane * 3 * 4);
    }
    mats_[index] = own;
  }

  void run() override {
    ncnn::Extractor ex = model.net_.create_extractor();
    for (size_t i = 0; i < mats_.size(); ++i) {
      if (mats_[i].empty()) throw EngineError("input '" + model.in_[i].spec.name + "' was not set");
      if (ex.input(model.in_[i].index, mats_[i]) != 0)
        throw EngineError("ncnn rejected input '" + model.in_[i].spec.name + "' (blob " + model.in_[i].spec.blob + ")");
    }
    for (size_t i = 0; i < outs_.size(); ++i) {
      auto owner = std::make_shared<MatOwner>();
      owner->model = model_;
      const int rc = ex.extract(model.out_[i].index, owner->mat, 0);
      if (rc != 0 || owner->mat.empty())
        throw EngineError("ncnn failed to compute output '" + model.out_[i].spec.name + "' (blob " +
                          model.out_[i].spec.blob + ", code " + std::to_string(rc) + ")");
      if (owner->mat.elemsize != 4 || owner->mat.elempack != 1)
        throw EngineError("ncnn output '" + model.out_[i].spec.name + "' is not unpacked float32");
      if (aliases_input(owner->mat)) {  // an output passed through from an input must not share its memory
        owner->mat = owner->mat.clone();
        count_copy(owner->mat.total() * 4);
      }
      outs_[i] = std::move(owner);
    }
    // every run takes its inputs anew: the caller's buffers may go away after this call
    for (size_t i = 0; i < mats_.size(); ++i) {
      read_[i] = mats_[i].data;
      mats_[i].release();
    }
  }

  Tensor output(size_t index) override {
    if (index >= outs_.size()) throw EngineError("output index " + std::to_string(index) + " out of range");
    if (!outs_[index]) throw EngineError("output '" + model.out_[index].spec.name + "': run() first");
    const Blob& b = model.out_[index];
    const ncnn::Mat& m = outs_[index]->mat;
    Tensor t;
    t.data = m.data;
    t.type = ElementType::F32;
    t.shape = mat_shape(m);
    t.strides = mat_strides(m);
    for (int64_t& s : t.strides) s *= 4;
    if (b.spec.batch_axis >= 0 && b.spec.batch_axis <= static_cast<int>(t.shape.size())) {
      const size_t k = b.spec.batch_axis;
      const int64_t stride = k < t.shape.size() ? t.strides[k] * t.shape[k] : 4;
      t.shape.insert(t.shape.begin() + k, 1);
      t.strides.insert(t.strides.begin() + k, stride);
    }
    if (!shape_fits(b.spec.shape, t.shape))
      throw EngineError("ncnn output '" + b.spec.name + "' has shape " + dims_str(t.shape) + ", the model says " +
                        dims_str(b.spec.shape));
    t.owner = outs_[index];
    return t;
  }

  const void* input_data(size_t index) const override {
    if (index >= read_.size()) throw EngineError("input index " + std::to_string(index) + " out of range");
    return read_[index];
  }

 private:
  const Blob& in(size_t index) const {
    if (index >= model.in_.size()) throw EngineError("input index " + std::to_string(index) + " out of range");
    return model.in_[index];
  }

  // This state's ncnn-owned Mat for an input, reused while no one else holds it.
  ncnn::Mat& own_mat(size_t index, const std::vector<int64_t>& shape) {
    ncnn::Mat& m = own_[index];
    const bool reusable = !m.empty() && m.refcount && *m.refcount == 1 + (mats_[index].data == m.data ? 1 : 0) &&
                          mat_shape(m) == shape;
    if (!reusable) {
      mats_[index].release();
      m = new_mat(shape);
      if (m.empty()) throw EngineError("out of memory for input '" + model.in_[index].spec.name + "'");
    }
    return m;
  }

  bool aliases_input(const ncnn::Mat& out) const {
    const auto* o = static_cast<const unsigned char*>(out.data);
    for (const ncnn::Mat& in : mats_) {
      const auto* p = static_cast<const unsigned char*>(in.data);
      if (p && o < p + in.total() * in.elemsize && p < o + out.total() * out.elemsize) return true;
    }
    return false;
  }

  const NcnnModel& model;
  std::vector<ncnn::Mat> mats_;  // what the next run reads: own_[i] or a Mat over the caller's memory
  std::vector<ncnn::Mat> own_;   // ncnn-owned input memory, kept across runs
  std::vector<const void*> read_;  // the memory each input was read from in the last run
  std::vector<std::shared_ptr<MatOwner>> outs_;
  std::vector<float> scratch_;
};

std::unique_ptr<EngineState> NcnnModel::make_state(std::shared_ptr<const EngineModel> self) const {
  return std::unique_ptr<EngineState>(new NcnnState(std::move(self)));
}

}  // namespace

std::shared_ptr<const EngineModel> open_ncnn(const NcnnConfig& config) {
  return std::make_shared<NcnnModel>(config);
}

std::string ncnn_build() {
  std::string isa;
  auto add = [&](bool on, const char* name) {
    if (on) isa += (isa.empty() ? "" : " ") + std::string(name);
  };
#if defined(__x86_64__) || defined(__i386__)
  add(NCNN_AVX, "avx");
  add(NCNN_FMA, "fma");
  add(NCNN_F16C, "f16c");
  add(NCNN_AVX2, "avx2");
  add(NCNN_AVXVNNI, "avxvnni");
  add(NCNN_AVX512, "avx512");
  add(NCNN_AVX512VNNI, "avx512vnni");
  add(NCNN_AVX512BF16, "avx512bf16");
  add(NCNN_AVX512FP16, "avx512fp16");
#elif defined(__aarch64__) || defined(__arm__)
  add(true, "neon");
#if defined(__aarch64__)
  add(NCNN_ARM82, "arm82");
  add(NCNN_ARM82DOT, "arm82dot");
  add(NCNN_ARM84BF16, "arm84bf16");
  add(NCNN_ARM84I8MM, "arm84i8mm");
#endif
#endif
  return std::string(NCNN_VERSION_STRING) + " (" + isa + ")";
}

}  // namespace edgesdk

#else  // built without ncnn

namespace edgesdk {
std::shared_ptr<const EngineModel> open_ncnn(const NcnnConfig&) {
  throw EngineUnavailable("this edgesdk native library was built without ncnn (EDGESDK_WITH_NCNN; see tools/build_ncnn.sh)");
}
std::string ncnn_build() { return ""; }
}  // namespace edgesdk

#endif
