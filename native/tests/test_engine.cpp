// C++ tests of the native engines (ctest). Small real models written here — ncnn param/bin and an
// OpenVINO IR — run through the real engines and are checked against plain loops; engines this
// build lacks are reported and skipped.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "edgesdk/engine.h"
#include "edgesdk/preprocess.h"

using namespace edgesdk;

#include "check.h"

template <class E, class F>
static bool throws(F&& f, const char* needle) {
  try {
    f();
  } catch (const E& e) {
    if (std::strstr(e.what(), needle)) return true;
    std::fprintf(stderr, "  message without '%s': %s\n", needle, e.what());
  }
  return false;
}

static std::string g_dir;

static std::string write_file(const std::string& name, const std::string& data) {
  const std::string path = g_dir + "/" + name;
  std::ofstream(path, std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
  return path;
}

static std::string floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// 1x1 convolution 3 -> 4 channels with bias, ReLU, global average pooling: out[o].
static const float kW[12] = {0.5f, -1.f, 0.25f, 1.f, 1.f, 1.f, -0.5f, 0.f, 2.f, 0.1f, 0.2f, -0.3f};
static const float kB[4] = {0.1f, -0.2f, 0.f, 0.3f};

static std::vector<float> reference(const float* x, int plane) {
  std::vector<float> out(4, 0.f);
  for (int o = 0; o < 4; ++o) {
    double acc = 0;
    for (int p = 0; p < plane; ++p) {
      float v = kB[o];
      for (int c = 0; c < 3; ++c) v += kW[o * 3 + c] * x[c * plane + p];
      acc += std::max(v, 0.f);
    }
    out[o] = static_cast<float>(acc / plane);
  }
  return out;
}

// Conv weights: a 4-byte flag 0 (raw float32) then the data; the bias is raw.
static std::string conv_bin() {
  std::string bin(4, '\0');
  bin += floats(std::vector<float>(kW, kW + 12)) + floats(std::vector<float>(kB, kB + 4));
  return bin;
}

static NcnnConfig conv_model(const std::string& name, bool relu_first, int h, int w) {
  std::string param = "7767517\n" + std::string(relu_first ? "5 5\n" : "4 4\n") + "Input in0 0 1 in0\n";
  std::string conv_in = "in0";
  if (relu_first) {
    param += "ReLU pre 1 1 in0 p0\n";
    conv_in = "p0";
  }
  param += "Convolution conv 1 1 " + conv_in + " c0 0=4 1=1 5=1 6=12\nReLU relu 1 1 c0 r0\nPooling pool 1 1 r0 out0 0=1 4=1\n";
  NcnnConfig cfg;
  cfg.param = write_file(name + ".param", param);
  cfg.bin = write_file(name + ".bin", conv_bin());
  cfg.inputs = {{"images", "in0", 0, {1, 3, h, w}, ElementType::F32}};
  cfg.outputs = {{"logits", "out0", 0, {1, 4}, ElementType::F32}};
  cfg.threads = 1;
  return cfg;
}

static Tensor borrow(float* data, std::vector<int64_t> shape) {
  Tensor t;
  t.data = data;
  t.shape = shape;
  t.strides.assign(shape.size(), 4);
  for (size_t i = shape.size() - 1; i-- > 0;) t.strides[i] = t.strides[i + 1] * shape[i + 1];
  return t;
}

static std::vector<float> values(const Tensor& t) {
  const float* p = static_cast<const float*>(t.data);
  return std::vector<float>(p, p + t.count());
}

static bool near(const std::vector<float>& a, const std::vector<float>& b, float tol) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::fabs(a[i] - b[i]) > tol) return false;
  return true;
}

static std::vector<float> ramp(size_t n, float scale, float offset) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = std::sin(static_cast<float>(i) * scale) + offset;
  return v;
}

static std::vector<uint8_t> test_frame(int w, int h) {
  std::vector<uint8_t> f(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < f.size(); ++i) f[i] = static_cast<uint8_t>((i * 131 + i / 7) & 0xff);
  return f;
}

static PreprocessSpec frame_spec(int w, int h) {
  PreprocessSpec s;
  s.width = w;
  s.height = h;
  s.resize = ResizeMode::Letterbox;
  s.mean[0] = s.mean[1] = s.mean[2] = 127.0;
  s.std[0] = s.std[1] = s.std[2] = 128.0;
  return s;
}

static void test_ncnn() {
  const int h = 6, w = 8, plane = h * w;
  auto model = open_ncnn(conv_model("conv", false, h, w));
  CHECK(std::string(model->backend()) == "ncnn" && model->threads() == 1);
  auto state = model->new_state();

  // zero copy in: ncnn reads the caller's buffer, the result matches the plain loop
  std::vector<float> x = ramp(3 * plane, 0.37f, 0.2f);
  state->set_input(0, borrow(x.data(), {1, 3, h, w}));
  state->run();
  Tensor y = state->output(0);
  CHECK((y.shape == std::vector<int64_t>{1, 4}));
  CHECK(near(values(y), reference(x.data(), plane), 1e-5f));
  CHECK(state->input_data(0) == x.data());
  CHECK(model->copies() == 0);

  // the output owns its memory: later runs, a freed state and a freed model leave it intact
  const std::vector<float> first = values(y);
  std::vector<float> x2 = ramp(3 * plane, 0.11f, -0.4f);
  state->set_input(0, borrow(x2.data(), {1, 3, h, w}));
  state->run();
  CHECK(near(values(state->output(0)), reference(x2.data(), plane), 1e-5f));
  CHECK(values(y) == first);

  // a strided input (every other element of a wider buffer) is copied once, and counted
  std::vector<float> wide(2 * x.size());
  for (size_t i = 0; i < x.size(); ++i) wide[2 * i] = x[i];
  Tensor strided = borrow(wide.data(), {1, 3, h, w});
  for (auto& s : strided.strides) s *= 2;
  state->set_input(0, strided);
  state->run();
  CHECK(values(state->output(0)) == first);
  CHECK(model->copies() == x.size() * 4);

  // the fused frame path writes into ncnn's own input Mat: same result as preprocess + set_input
  const std::vector<uint8_t> f = test_frame(37, 23);
  const ImageView view{f.data(), 37, 23, 37 * 3, ColorOrder::BGR};
  const PreprocessSpec spec = frame_spec(w, h);
  std::vector<float> pre(3 * plane);
  preprocess(view, spec, pre.data(), 1);
  state->set_input(0, borrow(pre.data(), {1, 3, h, w}));
  state->run();
  const std::vector<float> via_buffer = values(state->output(0));
  const uint64_t before = model->copies();
  state->set_frame(0, view, spec, 1);
  state->run();
  CHECK(values(state->output(0)) == via_buffer);
  CHECK(model->copies() == before);
  const void* own = state->input_data(0);
  state->set_frame(0, view, spec, 1);
  state->run();
  CHECK(state->input_data(0) == own);  // the same Mat, reused frame after frame

  // a spec that does not give the input's shape is refused
  CHECK(throws<PreprocessError>([&] { state->set_frame(0, view, frame_spec(w + 1, h), 1); }, "[1, 3, 6, 8]"));
  // bad inputs: shape, batch, missing
  std::vector<float> big(6 * plane);
  CHECK(throws<EngineError>([&] { state->set_input(0, borrow(big.data(), {1, 3, h, 2 * w})); }, "[1, 3, 6, 8]"));
  CHECK(throws<EngineError>([&] { state->run(); }, "'images' was not set"));

  state.reset();
  const std::vector<float> kept = values(y);
  model.reset();  // y still holds the Net whose allocator owns its memory
  CHECK(values(y) == kept);
}

static void test_ncnn_padded_channels() {
  // 5x5 floats = 100 bytes a channel; ncnn pads each to 112: the frame goes through planes + copies
  auto model = open_ncnn(conv_model("conv55", false, 5, 5));
  auto state = model->new_state();
  const std::vector<uint8_t> f = test_frame(20, 20);
  const ImageView view{f.data(), 20, 20, 60, ColorOrder::BGR};
  std::vector<float> pre(75);
  preprocess(view, frame_spec(5, 5), pre.data(), 1);
  state->set_frame(0, view, frame_spec(5, 5), 1);
  state->run();
  CHECK(near(values(state->output(0)), reference(pre.data(), 25), 1e-5f));
  CHECK(model->copies() == 75 * 4);
  // a caller's buffer with this layout cannot be read in place either
  state->set_input(0, borrow(pre.data(), {1, 3, 5, 5}));
  state->run();
  CHECK(state->input_data(0) != pre.data());
  CHECK(near(values(state->output(0)), reference(pre.data(), 25), 1e-5f));
}

static void test_ncnn_in_place_first_layer() {
  // ReLU first runs in place: the caller's buffer must be copied, never written or aliased
  auto model = open_ncnn(conv_model("relu_first", true, 4, 4));
  auto state = model->new_state();
  std::vector<float> x = ramp(48, 0.9f, -0.1f);
  const std::vector<float> untouched = x;
  std::vector<float> relu_x(x.size());
  for (size_t i = 0; i < x.size(); ++i) relu_x[i] = std::max(x[i], 0.f);
  state->set_input(0, borrow(x.data(), {1, 3, 4, 4}));
  state->run();
  CHECK(near(values(state->output(0)), reference(relu_x.data(), 16), 1e-5f));
  CHECK(x == untouched);
  CHECK(state->input_data(0) != x.data());
  CHECK(model->copies() == 48 * 4);
}

static void test_ncnn_threads() {
  // one model, a state per thread, results identical to sequential runs
  const int h = 16, w = 16;
  auto model = open_ncnn(conv_model("threads", false, h, w));
  const int n = 24;
  std::vector<std::vector<float>> xs, want;
  auto seq = model->new_state();
  for (int i = 0; i < n; ++i) {
    xs.push_back(ramp(3 * h * w, 0.05f * (i + 1), 0.01f * i));
    seq->set_input(0, borrow(xs.back().data(), {1, 3, h, w}));
    seq->run();
    want.push_back(values(seq->output(0)));
  }
  std::vector<int> bad(4, 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&, t] {
      auto state = model->new_state();
      for (int round = 0; round < 50; ++round) {
        const int i = (round * 7 + t) % n;
        state->set_input(0, borrow(xs[i].data(), {1, 3, h, w}));
        state->run();
        if (values(state->output(0)) != want[i]) ++bad[t];
      }
    });
  for (auto& th : pool) th.join();
  for (int b : bad) CHECK(b == 0);
}

static void test_ncnn_passthrough_output() {
  // Flatten of a 1-D blob hands its input on as the output: the output must not share the input
  NcnnConfig cfg;
  cfg.param = write_file("flat.param", "7767517\n2 2\nInput in0 0 1 in0\nFlatten flat 1 1 in0 out0\n");
  cfg.bin = write_file("flat.bin", "");
  cfg.inputs = {{"x", "in0", 0, {1, 8}, ElementType::F32}};
  cfg.outputs = {{"y", "out0", 0, {1, 8}, ElementType::F32}};
  auto model = open_ncnn(cfg);
  auto state = model->new_state();
  std::vector<float> x = ramp(8, 1.f, 0.f), x2 = ramp(8, 2.f, 1.f);
  state->set_input(0, borrow(x.data(), {1, 8}));
  state->run();
  Tensor y = state->output(0);
  CHECK(values(y) == x);
  CHECK(y.data != x.data() && y.data != state->input_data(0));
  state->set_input(0, borrow(x2.data(), {1, 8}));
  state->run();
  CHECK(values(y) == x);
  CHECK(values(state->output(0)) == x2);
}

static void test_ncnn_errors() {
  NcnnConfig cfg = conv_model("errors", false, 4, 4);
  NcnnConfig missing = cfg;
  missing.param = g_dir + "/nope.param";
  CHECK(throws<EngineError>([&] { open_ncnn(missing); }, "nope.param"));
  NcnnConfig blob = cfg;
  blob.outputs[0].blob = "out7";
  CHECK(throws<EngineError>([&] { open_ncnn(blob); }, "out7"));
  NcnnConfig short_bin = cfg;
  short_bin.bin = write_file("short.bin", std::string(8, '\0'));
  CHECK(throws<EngineError>([&] { open_ncnn(short_bin); }, "short.bin"));
}

// ---- OpenVINO: an IR with Parameter [1,3,4,4] -> ReLU -> Result.

static std::string ov_port(int id, const char* names) {
  std::string p = "<port id=\"" + std::to_string(id) + "\" precision=\"FP32\"" +
                  (names ? std::string(" names=\"") + names + "\"" : "") + ">";
  return p + "<dim>1</dim><dim>3</dim><dim>4</dim><dim>4</dim></port>";
}

static OpenVINOConfig relu_ir() {
  const std::string xml =
      "<?xml version=\"1.0\"?>\n<net name=\"relu\" version=\"11\"><layers>"
      "<layer id=\"0\" name=\"x\" type=\"Parameter\" version=\"opset1\"><data shape=\"1,3,4,4\" element_type=\"f32\"/>"
      "<output>" + ov_port(0, "x") + "</output></layer>"
      "<layer id=\"1\" name=\"relu\" type=\"ReLU\" version=\"opset1\"><input>" + ov_port(0, nullptr) +
      "</input><output>" + ov_port(1, "y") + "</output></layer>"
      "<layer id=\"2\" name=\"y/sink\" type=\"Result\" version=\"opset1\"><input>" + ov_port(0, nullptr) +
      "</input></layer></layers><edges>"
      "<edge from-layer=\"0\" from-port=\"0\" to-layer=\"1\" to-port=\"0\"/>"
      "<edge from-layer=\"1\" from-port=\"1\" to-layer=\"2\" to-port=\"0\"/></edges></net>\n";
  OpenVINOConfig cfg;
  cfg.xml = write_file("relu.xml", xml);
  write_file("relu.bin", "");
  cfg.properties = {{"PERFORMANCE_HINT", "LATENCY"}, {"INFERENCE_PRECISION_HINT", "f32"}, {"INFERENCE_NUM_THREADS", "1"}};
  cfg.inputs = {{"x", {1, 3, 4, 4}, ElementType::F32}};
  cfg.outputs = {{"y", {1, 3, 4, 4}, ElementType::F32}};
  cfg.input_ports = {"x"};
  cfg.output_ports = {"y"};
  return cfg;
}

static void test_openvino() {
  auto model = open_openvino(relu_ir());
  auto state = model->new_state();
  std::vector<float> x = ramp(48, 0.7f, 0.f), relu_x(48);
  for (size_t i = 0; i < 48; ++i) relu_x[i] = std::max(x[i], 0.f);
  state->set_input(0, borrow(x.data(), {1, 3, 4, 4}));
  state->run();
  Tensor y = state->output(0);
  CHECK(values(y) == relu_x);
  CHECK(state->input_data(0) == x.data());
  // y is held: the next run writes another tensor
  std::vector<float> x2 = ramp(48, 0.3f, 0.5f);
  state->set_input(0, borrow(x2.data(), {1, 3, 4, 4}));
  state->run();
  Tensor y2 = state->output(0);
  CHECK(y2.data != y.data && values(y) == relu_x);
  // frames go into the request's own input tensor
  const std::vector<uint8_t> f = test_frame(9, 9);
  const ImageView view{f.data(), 9, 9, 27, ColorOrder::BGR};
  std::vector<float> pre(48);
  preprocess(view, frame_spec(4, 4), pre.data(), 1);
  state->set_frame(0, view, frame_spec(4, 4), 1);
  state->run();
  std::vector<float> want(48);
  for (size_t i = 0; i < 48; ++i) want[i] = std::max(pre[i], 0.f);
  CHECK(values(state->output(0)) == want);
  CHECK(model->copies() == 0);
  CHECK(throws<EngineError>([&] { state->set_input(0, borrow(x.data(), {1, 3, 2, 8})); }, "[1, 3, 4, 4]"));
  state.reset();
  model.reset();
  CHECK(values(y) == relu_x);

  OpenVINOConfig missing = relu_ir();
  missing.xml = g_dir + "/nope.xml";
  CHECK(throws<EngineError>([&] { open_openvino(missing); }, "nope.xml"));
  OpenVINOConfig device = relu_ir();
  device.device = "NO_SUCH_DEVICE";
  CHECK(throws<EngineUnavailable>([&] { open_openvino(device); }, "NO_SUCH_DEVICE"));
}

// Tensor::copy_to: any strides (Fortran order, reversed dims, broadcast) into C order.
static void test_tensor_copy_to() {
  std::vector<int32_t> src(24);
  for (int i = 0; i < 24; ++i) src[i] = i;  // C order [2, 3, 4]
  auto c_order = [&](int a, int b, int c) { return src[(a * 3 + b) * 4 + c]; };
  Tensor t;
  t.type = ElementType::I32;
  t.data = src.data();
  t.shape = {2, 3, 4};
  t.strides = {48, 16, 4};
  std::vector<int32_t> out(24, -1);
  t.copy_to(out.data());
  CHECK(out == src);
  // the same values reversed along every dim: data points at the last element, strides negative
  t.data = src.data() + 23;
  t.strides = {-48, -16, -4};
  t.copy_to(out.data());
  bool reversed = true;
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 3; ++b)
      for (int c = 0; c < 4; ++c) reversed = reversed && out[(a * 3 + b) * 4 + c] == c_order(1 - a, 2 - b, 3 - c);
  CHECK(reversed);
  // a transposed view [4, 3, 2] of the same memory (what a Fortran-order array looks like)
  t.data = src.data();
  t.shape = {4, 3, 2};
  t.strides = {4, 16, 48};
  CHECK(!t.contiguous());
  t.copy_to(out.data());
  bool transposed = true;
  for (int c = 0; c < 4; ++c)
    for (int b = 0; b < 3; ++b)
      for (int a = 0; a < 2; ++a) transposed = transposed && out[(c * 3 + b) * 2 + a] == c_order(a, b, c);
  CHECK(transposed);
  // a broadcast row (stride 0) and an empty tensor
  t.shape = {3, 4};
  t.strides = {0, 4};
  t.copy_to(out.data());
  CHECK(out[0] == 0 && out[4] == 0 && out[8] == 0 && out[11] == 3);
  t.shape = {0, 4};
  out[0] = -7;
  t.copy_to(out.data());
  CHECK(out[0] == -7);
}

int main() {
  char tmpl[] = "/tmp/edgesdk-engine-XXXXXX";
  if (!mkdtemp(tmpl)) return 2;
  g_dir = tmpl;
  const std::vector<std::string> built = engines();
  auto has = [&](const char* e) { return std::find(built.begin(), built.end(), e) != built.end(); };
  test_tensor_copy_to();
  if (has("ncnn")) {
    test_ncnn();
    test_ncnn_padded_channels();
    test_ncnn_in_place_first_layer();
    test_ncnn_threads();
    test_ncnn_passthrough_output();
    test_ncnn_errors();
  } else {
    std::printf("ncnn: not built, skipped\n");
    CHECK(throws<EngineUnavailable>([] { open_ncnn(NcnnConfig()); }, "without ncnn"));
  }
  if (has("openvino")) {
    test_openvino();
  } else {
    std::printf("openvino: not built, skipped\n");
  }
  std::string cleanup = g_dir;
  for (const char* f : {"conv", "conv55", "relu_first", "threads", "errors", "short", "flat", "relu"})
    for (const char* ext : {".param", ".bin", ".xml"}) std::remove((cleanup + "/" + f + ext).c_str());
  rmdir(cleanup.c_str());
  std::printf("engines: %zu built; %d failed\n", built.size(), failures);
  return failures ? 1 : 0;
}
