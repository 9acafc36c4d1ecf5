// edgesdk native engines: ncnn and OpenVINO models run from C++, frames preprocessed straight into
// the memory the engine reads, outputs handed out over the engine's own memory.
//
// Thread-safety (the whole contract):
// - An EngineModel is immutable once open_ncnn()/open_openvino() returns it (but for its atomic
//   copy counter). Share one std::shared_ptr<const EngineModel> across any number of threads.
// - An EngineState is the small per-thread part (ncnn: its input Mats, one Extractor per run;
//   OpenVINO: one infer request and its tensors). Make one per thread with new_state(); never use
//   one from two threads at once. It keeps its model alive.
// - A Tensor returned by EngineState::output() owns (shares) the engine memory it views and the
//   model that memory came from: it stays valid after later runs, after the state and the model
//   are gone, and may be read from any thread.
// - copies() counts every byte this model's states copied on the way in or out; engines' own
//   internal conversions (ncnn's packing, OpenVINO's plugin) are not ours and not counted.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "edgesdk/preprocess.h"

namespace edgesdk {

// The model cannot be loaded or run (bad files, wrong shapes): edgesdk.errors.ModelError.
class EngineError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The engine was not built into this library or cannot start here: BackendUnavailable.
class EngineUnavailable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class ElementType : uint8_t { F32, F16, U8, I8, I32, I64 };
size_t element_size(ElementType t);
const char* element_name(ElementType t);  // numpy's names: "float32", "int64", ...

// One model input or output. Dims < 0 are dynamic.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  ElementType type = ElementType::F32;
};

// A tensor in host memory. strides are in bytes, one per dim. `owner` keeps `data` alive (null
// when the memory is borrowed from the caller).
struct Tensor {
  void* data = nullptr;
  ElementType type = ElementType::F32;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  std::shared_ptr<void> owner;

  size_t count() const;
  bool contiguous() const;  // C order, no gaps
  void copy_to(void* dst) const;  // into C-order memory of count() elements; any strides (negative too)
};

class EngineState;

class EngineModel : public std::enable_shared_from_this<EngineModel> {
 public:
  virtual ~EngineModel() = default;
  virtual const char* backend() const = 0;
  const std::vector<TensorSpec>& inputs() const { return inputs_; }
  const std::vector<TensorSpec>& outputs() const { return outputs_; }
  int threads() const { return threads_; }  // engine threads per run (0: the engine's default)
  uint64_t copies() const { return copied_bytes_.load(std::memory_order_relaxed); }

  // Working memory for one thread.
  std::unique_ptr<EngineState> new_state() const;

 protected:
  virtual std::unique_ptr<EngineState> make_state(std::shared_ptr<const EngineModel> self) const = 0;
  void count_copy(size_t bytes) const { copied_bytes_.fetch_add(bytes, std::memory_order_relaxed); }
  std::vector<TensorSpec> inputs_, outputs_;
  int threads_ = 0;

 private:
  mutable std::atomic<uint64_t> copied_bytes_{0};
  friend class EngineState;
};

class EngineState {
 public:
  virtual ~EngineState() = default;

  // Input `index` is read in place from `t` (any strides; C-contiguous memory is not copied when
  // the engine can read it as it is). The caller keeps `t` alive and unchanged until run() returns.
  virtual void set_input(size_t index, const Tensor& t) = 0;

  // Preprocess `frame` (see preprocess.h) straight into this state's input memory for `index`,
  // which the engine then reads: spec must give that input's shape, float32. `threads` as in
  // preprocess(). Throws PreprocessError for a bad frame or spec.
  virtual void set_frame(size_t index, const ImageView& frame, const PreprocessSpec& spec, int threads) = 0;

  // Run the model on the inputs set since the last run (every input is set anew for every run).
  virtual void run() = 0;

  // Output `index` of the last run, over the engine's memory (see the contract at the top).
  virtual Tensor output(size_t index) = 0;

  // The memory the engine read input `index` from in the last run (tests prove zero copy with it).
  virtual const void* input_data(size_t index) const = 0;

 protected:
  explicit EngineState(std::shared_ptr<const EngineModel> model) : model_(std::move(model)) {}
  void count_copy(size_t bytes) const { model_->count_copy(bytes); }
  std::shared_ptr<const EngineModel> model_;
};

// ---- ncnn: model.param + model.bin as written by edgesdk's ncnn backend.

struct NcnnBlob {
  std::string name;             // ONNX tensor name
  std::string blob;             // ncnn blob name (in0, out0, ...)
  int batch_axis = -1;          // the ONNX axis ncnn drops (batch 1 only), -1 none
  std::vector<int64_t> shape;   // ONNX shape, dims < 0 dynamic
  ElementType type = ElementType::F32;
};

struct NcnnConfig {
  std::string param, bin;
  std::vector<NcnnBlob> inputs, outputs;
  bool fp16 = false;             // fp16 storage and packing (fp16 artifacts)
  bool fp16_arithmetic = false;  // also fp16 arithmetic where the CPU has it (with fp16 only)
  bool int8 = false;             // int8 artifacts: quantized layers run ncnn's int8 kernels
  int threads = 0;               // 0: ncnn's default (the big cores); fixed at load (gemm tiles)
  int cpu_powersave = 0;         // process-wide in ncnn: 0 all, 1 little, 2 big cores
};

// Throws EngineUnavailable when this library was built without ncnn, EngineError for bad files.
std::shared_ptr<const EngineModel> open_ncnn(const NcnnConfig& config);

// The ncnn linked in: version and the kernel sets compiled into it, e.g. "1.0.20261121 (avx fma
// f16c avx2)" (ncnn picks among them at run time); empty when built without ncnn.
std::string ncnn_build();

// ---- OpenVINO: model.xml + model.bin, compiled for a device with string properties
// (PERFORMANCE_HINT, INFERENCE_PRECISION_HINT, INFERENCE_NUM_THREADS, NUM_STREAMS, ...).

struct OpenVINOConfig {
  std::string xml;
  std::string device = "CPU";
  std::vector<std::pair<std::string, std::string>> properties;
  std::vector<TensorSpec> inputs, outputs;  // ONNX names and shapes, in the artifact's order
  std::vector<std::string> input_ports, output_ports;  // IR tensor name of each (same order)
  int threads = 0;
  std::string plugin;  // path of libedgesdk_openvino.so; empty: next to this library
};

// The OpenVINO engine lives in a separate library loaded on first use, so this library (and the
// Python module) loads on devices without OpenVINO. Throws EngineUnavailable when it is not built
// or OpenVINO's runtime cannot be loaded, EngineError when the model cannot be compiled.
std::shared_ptr<const EngineModel> open_openvino(const OpenVINOConfig& config);

// Engines built into this library: "ncnn", "openvino" (the latter still needs its runtime).
std::vector<std::string> engines();

}  // namespace edgesdk
