// edgesdk native preprocessing: one fused pass from a camera frame to a model input tensor.
//
// A packed 3-channel uint8 frame (any row stride) is resized (bilinear with OpenCV INTER_LINEAR
// geometry computed in float, or nearest), letterboxed or stretched, colour-ordered, normalised as
// (pixel - mean) / std and written NCHW or NHWC as float32, float16 or uint8 straight into the
// caller's buffer. The numpy function edgesdk.preprocess.preprocess_reference is the specification.
//
// Thread-safety: preprocess() may run concurrently from any number of threads on distinct outputs;
// it keeps no state between calls. set_preprocess_kernels() is a test hook that changes the kernel
// set for the whole process and must not race with running calls.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace edgesdk {

// Invalid arguments to the preprocessing API (sizes, strides, names); bindings map it onto
// edgesdk.errors.EdgeSDKError.
class PreprocessError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

enum class ColorOrder : uint8_t { BGR, RGB };
enum class ResizeMode : uint8_t { Letterbox, Stretch };
enum class Interp : uint8_t { Bilinear, Nearest };
enum class Layout : uint8_t { NCHW, NHWC };
enum class DType : uint8_t { Float32, Float16, UInt8 };

// A packed 3-channel uint8 image: pixel (x, y) channel c is data[y * row_stride + 3 * x + c].
// row_stride may be larger than 3 * width (ROIs) or negative (vertically flipped views).
struct ImageView {
  const uint8_t* data = nullptr;
  int width = 0;
  int height = 0;
  ptrdiff_t row_stride = 0;  // bytes
  ColorOrder order = ColorOrder::BGR;
};

// The fields of the Python PreprocessSpec / the [preprocess] table of a target profile.
struct PreprocessSpec {
  int width = 224;  // model input
  int height = 224;
  ResizeMode resize = ResizeMode::Stretch;
  Interp interp = Interp::Bilinear;
  uint8_t pad = 114;
  ColorOrder color = ColorOrder::RGB;  // channel order the model wants
  double mean[3] = {0.0, 0.0, 0.0};    // per model channel
  double std[3] = {1.0, 1.0, 1.0};
  Layout layout = Layout::NCHW;
  DType dtype = DType::Float32;
};

// Where the resized frame lands inside the model input.
struct Rect {
  int left = 0, top = 0, width = 0, height = 0;
};

// Letterbox keeps the aspect ratio (Python's round-half-even, like PreprocessSpec.geometry) and
// centres; stretch fills the input.
Rect resize_geometry(const PreprocessSpec& spec, int frame_width, int frame_height);

// Bytes of one output tensor: 3 * width * height * element size.
size_t output_bytes(const PreprocessSpec& spec);

// Writes the whole output tensor (batch 1) at `out`, output_bytes(spec) bytes, C-contiguous.
// `threads` > 1 splits the output rows into bands run on that many threads (capped for small
// outputs). Throws PreprocessError for an invalid frame or spec; never reads outside the frame.
void preprocess(const ImageView& frame, const PreprocessSpec& spec, void* out, int threads = 1);

// The kernel set preprocess() uses: "avx2", "neon" or "scalar".
const char* preprocess_kernels();

// Test hook: force "scalar", "avx2" or "neon" (when this build and CPU have it) or go back to the
// automatic choice with "auto". Throws PreprocessError for a set that is not available here.
void set_preprocess_kernels(const std::string& name);

}  // namespace edgesdk
