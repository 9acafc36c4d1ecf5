// edgesdk bundles from C++: read a bundle directory written by `edgesdk package` (manifest.json, the
// engine artifact under model/, labels, golden samples), verify it, and open its model with the
// engines of engine.h. The Python reader (edgesdk/bundle.py) is the specification of the format.
//
//   edgesdk::Bundle bundle = edgesdk::read_bundle("bundle/");          // checks every sha256
//   auto model = edgesdk::open_bundle(bundle);                         // shared, immutable
//   auto state = model->new_state();                                   // one per thread
//   state->set_frame(0, frame, bundle.preprocess, 1);                  // BGR uint8 -> input memory
//   state->run();
//   edgesdk::Tensor logits = state->output(0);
//
// Thread-safety: read_bundle(), read_npy() and sha256_file() keep no state and may run on any
// thread. A Bundle is a plain value: read it from any number of threads, copy it freely. The model
// open_bundle() returns follows engine.h's contract (share the model, one EngineState per thread).
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "edgesdk/engine.h"
#include "edgesdk/preprocess.h"

namespace edgesdk {

// A bundle that cannot be used: missing or modified files, a manifest this library does not read.
// what() names the bundle and the file or key at fault (edgesdk.errors.BundleError in Python).
class BundleError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One golden sample: (tensor name, path relative to the bundle) of each input and reference output.
struct GoldenSample {
  std::vector<std::pair<std::string, std::string>> inputs, outputs;
};

struct Bundle {
  std::string root;         // the bundle directory as given
  int schema = 0;
  std::string target;       // the target profile's name ("rpi5")
  std::string arch;         // the target's arch ("aarch64", "armv7", "x86_64")
  std::string backend;      // "ncnn", "openvino", ...
  std::string precision;    // "fp32", "fp16", "int8"
  int threads = 0;          // engine threads the profile asks for (0: the engine's default)
  std::vector<TensorSpec> inputs, outputs;  // ONNX names, shapes (< 0 dynamic), types

  bool has_preprocess = false;  // false: the model takes tensors, not frames
  PreprocessSpec preprocess;    // frames arrive BGR; see preprocess.h

  std::string postprocess = "none";  // the manifest's postprocess kind ("topk", "yolo", ...)
  int topk = 5;                      // "topk": how many classes to report
  std::vector<std::string> labels;   // class names, empty without labels

  std::vector<GoldenSample> golden;
  double min_cosine = 0.0;  // the cosine the build's parity check held the model to (0: not recorded)
  std::vector<std::pair<std::string, std::string>> files;  // relative path, sha256 (hex)
  std::vector<std::pair<std::string, std::string>> versions;  // component, version at build time

  NcnnConfig ncnn;  // backend "ncnn": absolute param/bin paths, blob mapping, fp16, threads

  std::string path(const std::string& relative) const;  // root + "/" + relative
};

// Reads and checks `dir` (or its manifest.json): schema, required keys, safe relative paths, and
// with `verify` the sha256 of every listed file. Throws BundleError.
Bundle read_bundle(const std::string& dir, bool verify = true);

// Lower-case hex SHA-256 of a file's contents. Throws BundleError when it cannot be read.
std::string sha256_file(const std::string& path);
std::string sha256_hex(const void* data, size_t size);

// A .npy file (format 1.0-3.0, C order, little-endian bool/uint8/int8/int32/int64/float16/float32)
// as a contiguous Tensor owning its memory. Throws BundleError naming the file.
Tensor read_npy(const std::string& path);

// Opens the bundle's model with its engine; `threads` > 0 overrides the profile's thread count.
// Inline so the engine libraries are linked by the program that calls it, not by the bundle reader.
// Throws EngineUnavailable for an engine not built here, EngineError for a model that does not load.
inline std::shared_ptr<const EngineModel> open_bundle(const Bundle& bundle, int threads = 0) {
  if (bundle.backend == "ncnn") {
    NcnnConfig config = bundle.ncnn;
    if (threads > 0) config.threads = threads;
    return open_ncnn(config);
  }
  throw EngineUnavailable(bundle.root + ": the C++ runtime opens ncnn bundles; this one is for " + bundle.backend +
                          " (use the Python runtime: edgesdk.load)");
}

}  // namespace edgesdk
