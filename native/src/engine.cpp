// Engine pieces shared by every backend: element types, tensors, states, and the loader of the
// OpenVINO engine library (kept out of this library so it loads where OpenVINO is absent).
#include <dlfcn.h>

#include <cstring>
#include <mutex>
#include <string>

#include "edgesdk/engine.h"
#include "engine_shapes.h"

namespace edgesdk {

std::string dims_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + (shape[i] < 0 ? std::string("?") : std::to_string(shape[i]));
  return s + "]";
}

bool shape_fits(const std::vector<int64_t>& want, const std::vector<int64_t>& got) {
  if (want.size() != got.size()) return false;
  for (size_t i = 0; i < want.size(); ++i)
    if (want[i] >= 0 && want[i] != got[i]) return false;
  return true;
}

size_t element_size(ElementType t) {
  switch (t) {
    case ElementType::F32: case ElementType::I32: return 4;
    case ElementType::F16: return 2;
    case ElementType::U8: case ElementType::I8: return 1;
    case ElementType::I64: return 8;
  }
  return 0;
}

const char* element_name(ElementType t) {
  switch (t) {
    case ElementType::F32: return "float32";
    case ElementType::F16: return "float16";
    case ElementType::U8: return "uint8";
    case ElementType::I8: return "int8";
    case ElementType::I32: return "int32";
    case ElementType::I64: return "int64";
  }
  return "?";
}

size_t Tensor::count() const {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

bool Tensor::contiguous() const {
  int64_t want = static_cast<int64_t>(element_size(type));
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != want) return false;
    want *= shape[i];
  }
  return true;
}

void Tensor::copy_to(void* dst) const {
  const size_t item = element_size(type);
  const size_t n = count();
  if (n == 0) return;
  if (contiguous()) {
    std::memcpy(dst, data, n * item);
    return;
  }
  // Walk the destination in C order with an index per dim; the source offset follows the strides.
  const size_t rank = shape.size();
  std::vector<int64_t> idx(rank, 0);
  const auto* src = static_cast<const uint8_t*>(data);
  auto* out = static_cast<uint8_t*>(dst);
  int64_t offset = 0;
  for (size_t k = 0; k < n; ++k) {
    std::memcpy(out + k * item, src + offset, item);
    for (size_t d = rank; d-- > 0;) {
      offset += strides[d];
      if (++idx[d] < shape[d]) break;
      offset -= strides[d] * shape[d];
      idx[d] = 0;
    }
  }
}

std::unique_ptr<EngineState> EngineModel::new_state() const { return make_state(shared_from_this()); }

std::vector<std::string> engines() {
  std::vector<std::string> names;
#if defined(EDGESDK_WITH_NCNN)
  names.push_back("ncnn");
#endif
#if defined(EDGESDK_WITH_OPENVINO)
  names.push_back("openvino");
#endif
  return names;
}

// ---------------------------------------------------------------------------------------------
// OpenVINO: libedgesdk_openvino.so, loaded once and never unloaded (models it made may live on).

#if defined(EDGESDK_WITH_OPENVINO)
namespace {

using OpenFn = int (*)(const OpenVINOConfig*, std::shared_ptr<const EngineModel>*, std::string*);
using AbiFn = const char* (*)();

std::string own_directory() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&engines), &info) == 0 || !info.dli_fname) return ".";
  std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

OpenFn load_plugin(const std::string& explicit_path) {
  static std::mutex mutex;
  static OpenFn open_fn = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (open_fn) return open_fn;
  const std::string path = explicit_path.empty() ? own_directory() + "/libedgesdk_openvino.so" : explicit_path;
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    throw EngineUnavailable("cannot load the OpenVINO engine library " + path + ": " + (why ? why : "unknown error") +
                            " (is the openvino package installed?)");
  }
  auto abi = reinterpret_cast<AbiFn>(dlsym(lib, "edgesdk_openvino_abi"));
  auto fn = reinterpret_cast<OpenFn>(dlsym(lib, "edgesdk_openvino_open"));
  if (!abi || !fn) throw EngineUnavailable(path + " is not an edgesdk OpenVINO engine library");
  if (std::string(abi()) != EDGESDK_VERSION)
    throw EngineUnavailable(path + " was built for edgesdk " + abi() + ", this is " + EDGESDK_VERSION);
  open_fn = fn;
  return open_fn;
}

}  // namespace

std::shared_ptr<const EngineModel> open_openvino(const OpenVINOConfig& config) {
  OpenFn fn = load_plugin(config.plugin);
  std::shared_ptr<const EngineModel> model;
  std::string error;
  switch (fn(&config, &model, &error)) {
    case 0: return model;
    case 1: throw EngineError(error);
    default: throw EngineUnavailable(error);
  }
}
#else
std::shared_ptr<const EngineModel> open_openvino(const OpenVINOConfig&) {
  throw EngineUnavailable("this edgesdk native library was built without OpenVINO (EDGESDK_WITH_OPENVINO)");
}
#endif

}  // namespace edgesdk
