// C++ tests of the fused preprocessing kernels on their own (ctest; also run under qemu for
// cross builds). Every kernel set this build and CPU offer is held to a plain float reference
// written the way the numpy specification (edgesdk/preprocess.py) computes.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "../src/preprocess_kernels.h"
#include "edgesdk/core.h"
#include "edgesdk/preprocess.h"

using namespace edgesdk;

#include "check.h"

static float half_to_float(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  float v = e == 0 ? std::ldexp(static_cast<float>(m), -24)
                   : (e == 31 ? (m ? NAN : INFINITY) : std::ldexp(static_cast<float>(m | 0x400), e - 25));
  return (h & 0x8000) ? -v : v;
}

// The numpy reference in float: vertical blend first, then horizontal, then (x - mean) * (1/std).
static std::vector<float> reference(const ImageView& img, const PreprocessSpec& spec) {
  const Rect g = resize_geometry(spec, img.width, img.height);
  const int W = spec.width, H = spec.height;
  auto px = [&](int x, int y, int c) { return static_cast<float>(img.data[y * img.row_stride + 3 * x + c]); };
  struct Tap { int i0, i1; float f; };
  auto taps = [&](int src, int dst, int d) {
    const double scale = static_cast<double>(src) / dst;
    if (spec.interp == Interp::Nearest) {
      int i = std::min(static_cast<int>(d * scale), src - 1);
      return Tap{i, i, 0.f};
    }
    double s = (d + 0.5) * scale - 0.5, fl = std::floor(s);
    int i0 = static_cast<int>(fl);
    float f = i0 < 0 ? 0.f : static_cast<float>(s - fl);
    i0 = std::min(std::max(i0, 0), src - 1);
    return Tap{i0, std::min(i0 + 1, src - 1), f};
  };
  std::vector<float> canvas(static_cast<size_t>(W) * H * 3, static_cast<float>(spec.pad));
  for (int y = 0; y < g.height; ++y) {
    Tap ty = taps(img.height, g.height, y);
    for (int x = 0; x < g.width; ++x) {
      Tap tx = taps(img.width, g.width, x);
      for (int c = 0; c < 3; ++c) {
        float r0 = px(tx.i0, ty.i0, c) * (1.f - ty.f) + px(tx.i0, ty.i1, c) * ty.f;
        float r1 = px(tx.i1, ty.i0, c) * (1.f - ty.f) + px(tx.i1, ty.i1, c) * ty.f;
        canvas[(static_cast<size_t>(g.top + y) * W + g.left + x) * 3 + c] = r0 * (1.f - tx.f) + r1 * tx.f;
      }
    }
  }
  const bool swap = spec.color != img.order;
  std::vector<float> out(canvas.size());
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int oc = 0; oc < 3; ++oc) {
        float v = canvas[(static_cast<size_t>(y) * W + x) * 3 + (swap ? 2 - oc : oc)];
        v = (v - static_cast<float>(spec.mean[oc])) * static_cast<float>(1.0 / spec.std[oc]);
        size_t i = spec.layout == Layout::NCHW ? (static_cast<size_t>(oc) * H + y) * W + x
                                               : (static_cast<size_t>(y) * W + x) * 3 + oc;
        out[i] = v;
      }
  return out;
}

// float32: the evaluation order differs from the reference (horizontal pass first, FMA), so a few
// float32 ulps of the 0..255 pixel scale are allowed, seen through 1/std.
static double float32_tolerance(const PreprocessSpec& s) {
  double max_scale = 0;
  for (int c = 0; c < 3; ++c) max_scale = std::max(max_scale, std::fabs(1.0 / s.std[c]));
  return 1e-5 + 255.0 * 0x1p-21 * max_scale;  // 8 ulps of a pixel in 128..256
}

// The worst deviation from the reference as a fraction of what the dtype allows (<= 1 passes):
// float32 the tolerance above; float16 that plus the half's rounding step at the value; uint8 1
// from the rounded reference.
static double worst_ratio(const std::vector<uint8_t>& out, const std::vector<float>& ref, const PreprocessSpec& s) {
  const double tol = float32_tolerance(s);
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double want = ref[i];
    double got, allowed;
    if (s.dtype == DType::Float32) {
      float f;
      std::memcpy(&f, out.data() + 4 * i, 4);
      got = f, allowed = tol;
    } else if (s.dtype == DType::Float16) {
      uint16_t h;
      std::memcpy(&h, out.data() + 2 * i, 2);
      got = half_to_float(h);
      const int e = std::max(-14, std::ilogb(std::fabs(want) + 0x1p-30));
      allowed = tol + std::ldexp(1.0, e - 10);
    } else {
      got = out[i];
      const double rounded = std::min(255.0, std::max(0.0, std::nearbyint(want)));
      worst = std::max(worst, std::fabs(got - rounded));  // 0 or 1 both pass
      continue;
    }
    worst = std::max(worst, std::fabs(got - want) / allowed);
  }
  return worst;
}

static std::vector<std::string> kernel_sets() {
  std::vector<std::string> sets = {"scalar"};
  set_preprocess_kernels("auto");
  std::string automatic = preprocess_kernels();
  if (automatic != "scalar") sets.push_back(automatic);
  return sets;
}

static void test_geometry() {
  PreprocessSpec s;
  s.width = s.height = 640;
  s.resize = ResizeMode::Letterbox;
  Rect g = resize_geometry(s, 1920, 1080);
  CHECK(g.left == 0 && g.top == 140 && g.width == 640 && g.height == 360);
  s.width = s.height = 5;  // 3x2 into 5x5: 2 * 5/3 = 3.33 -> 3; 1.5 would round to 2 (half even)
  g = resize_geometry(s, 3, 2);
  CHECK(g.width == 5 && g.height == 3 && g.left == 0 && g.top == 1);
  s.width = 3, s.height = 4;  // 2x2 into 3x4: r = 1.5, 2 * 1.5 = 3
  g = resize_geometry(s, 4, 2);  // r = min(0.75, 2) -> 3 x 1.5 -> 2 (half to even)
  CHECK(g.width == 3 && g.height == 2 && g.top == 1);
  s.resize = ResizeMode::Stretch;
  g = resize_geometry(s, 4, 2);
  CHECK(g.left == 0 && g.top == 0 && g.width == 3 && g.height == 4);
}

static void test_half_conversion() {
  using detail::f32_to_f16;
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(-2.0f) == 0xc000);
  CHECK(f32_to_f16(65504.f) == 0x7bff);
  CHECK(f32_to_f16(65519.f) == 0x7bff);
  CHECK(f32_to_f16(65520.f) == 0x7c00);  // rounds up past the largest half
  CHECK(f32_to_f16(1e9f) == 0x7c00);
  CHECK(f32_to_f16(std::ldexp(1.f, -24)) == 0x0001);
  CHECK(f32_to_f16(std::ldexp(1.f, -25)) == 0x0000);      // tie to even
  CHECK(f32_to_f16(std::ldexp(3.f, -25)) == 0x0002);      // tie to even
  CHECK(f32_to_f16(std::ldexp(1.f, -14)) == 0x0400);      // smallest normal
  CHECK(f32_to_f16(1.0f + std::ldexp(1.f, -11)) == 0x3c00);  // tie to even
  CHECK(f32_to_f16(1.0f + std::ldexp(3.f, -11)) == 0x3c02);
  CHECK(f32_to_f16(0.1f) == 0x2e66);
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  CHECK((f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (f32_to_f16(NAN) & 0x3ff) != 0);
  // every half value survives the round trip
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    CHECK(f32_to_f16(half_to_float(static_cast<uint16_t>(h))) == h);
    if (failures > 20) return;
  }
}

// Random frames, sizes and specs against the reference, for every kernel set; strided, flipped
// and RGB-ordered frames included.
static void test_random_against_reference(std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (const std::string& set : kernel_sets()) {
    set_preprocess_kernels(set);
    double worst = 0;
    for (int trial = 0; trial < 120; ++trial) {
      const int fw = trial < 4 ? 1 + trial % 2 : pick(1, 300), fh = trial < 4 ? 1 + trial / 2 : pick(1, 300);
      const int pad_bytes = pick(0, 2) * pick(1, 7);
      std::vector<uint8_t> buf(static_cast<size_t>(fh) * (3 * fw + pad_bytes));
      for (auto& b : buf) b = static_cast<uint8_t>(pick(0, 255));
      ImageView img{buf.data(), fw, fh, 3 * fw + pad_bytes, pick(0, 3) == 0 ? ColorOrder::RGB : ColorOrder::BGR};
      if (pick(0, 4) == 0) {  // a vertically flipped view: negative stride from the last row
        img.data = buf.data() + (fh - 1) * img.row_stride;
        img.row_stride = -img.row_stride;
      }
      PreprocessSpec s;
      s.width = pick(1, 260);
      s.height = pick(1, 260);
      s.resize = pick(0, 1) ? ResizeMode::Letterbox : ResizeMode::Stretch;
      s.interp = pick(0, 3) ? Interp::Bilinear : Interp::Nearest;
      s.pad = static_cast<uint8_t>(pick(0, 255));
      s.color = pick(0, 1) ? ColorOrder::RGB : ColorOrder::BGR;
      s.layout = pick(0, 1) ? Layout::NCHW : Layout::NHWC;
      s.dtype = static_cast<DType>(pick(0, 2));
      if (s.dtype != DType::UInt8) {
        for (int c = 0; c < 3; ++c) {
          s.mean[c] = pick(0, 1) ? 0.0 : pick(0, 2550) / 10.0;
          s.std[c] = pick(0, 1) ? 255.0 : (pick(0, 1) ? 1.0 : pick(10, 1000) / 10.0);
        }
      }
      std::vector<uint8_t> out(output_bytes(s), 0xcd);
      preprocess(img, s, out.data(), 1);
      const std::vector<float> ref = reference(img, s);
      const double err = worst_ratio(out, ref, s);
      if (s.dtype != DType::UInt8) worst = std::max(worst, err);
      if (!(err <= 1.0)) {
        std::fprintf(stderr, "[%s] frame %dx%d stride %td -> %dx%d dtype %d layout %d interp %d: error %g of the allowed\n",
                     set.c_str(), fw, fh, img.row_stride, s.width, s.height, static_cast<int>(s.dtype),
                     static_cast<int>(s.layout), static_cast<int>(s.interp), err);
        ++failures;
        if (failures > 10) return;
      }
    }
    std::printf("%s: worst float deviation %.3f of the allowed over 120 random cases\n", set.c_str(), worst);
  }
  set_preprocess_kernels("auto");
}

// Threads split the rows; every band must write exactly what one thread writes.
static void test_threads_identical(std::mt19937& rng) {
  std::vector<uint8_t> buf(1080 * 1920 * 3);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  ImageView img{buf.data(), 1920, 1080, 1920 * 3};
  PreprocessSpec s;
  s.width = s.height = 640;
  s.resize = ResizeMode::Letterbox;
  s.std[0] = s.std[1] = s.std[2] = 255.0;
  for (DType t : {DType::Float32, DType::Float16, DType::UInt8}) {
    s.dtype = t;
    if (t == DType::UInt8) s.std[0] = s.std[1] = s.std[2] = 1.0;
    std::vector<uint8_t> one(output_bytes(s)), many(output_bytes(s), 0xcd);
    preprocess(img, s, one.data(), 1);
    for (int n : {2, 3, 7}) {
      preprocess(img, s, many.data(), n);
      CHECK(one == many);
    }
  }
}

// The pad band and columns hold exactly (pad - mean) / std.
static void test_pad_values() {
  std::vector<uint8_t> buf(10 * 40 * 3, 7);
  ImageView img{buf.data(), 40, 10, 120};
  PreprocessSpec s;
  s.width = 16, s.height = 16;
  s.resize = ResizeMode::Letterbox;
  s.pad = 114;
  s.mean[0] = 1, s.mean[1] = 2, s.mean[2] = 3;
  s.std[0] = 2, s.std[1] = 4, s.std[2] = 8;
  std::vector<float> out(3 * 16 * 16);
  preprocess(img, s, out.data(), 1);
  const Rect g = resize_geometry(s, 40, 10);  // 16 x 4 at top 6
  CHECK(g.top == 6 && g.height == 4 && g.width == 16);
  for (int c = 0; c < 3; ++c) {
    CHECK(out[c * 256 + 0] == (114.f - static_cast<float>(s.mean[c])) / static_cast<float>(s.std[c]));
    CHECK(out[c * 256 + 15 * 16 + 15] == out[c * 256]);
    CHECK(out[c * 256 + 6 * 16 + 3] == (7.f - static_cast<float>(s.mean[c])) / static_cast<float>(s.std[c]));
  }
}

// A frame whose last byte sits just before an unmapped page: a read past the frame would fault.
static void test_no_read_past_frame() {
#if defined(__linux__)
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  for (int fw : {1, 2, 3, 17, 100}) {
    const int fh = 5;
    const size_t bytes = static_cast<size_t>(fw) * fh * 3;
    const size_t span = (bytes + page - 1) / page * page;
    void* mem = mmap(nullptr, span + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(mem != MAP_FAILED);
    if (mem == MAP_FAILED) return;
    uint8_t* base = static_cast<uint8_t*>(mem);
    CHECK(mprotect(base + span, page, PROT_NONE) == 0);
    uint8_t* frame = base + span - bytes;
    for (size_t i = 0; i < bytes; ++i) frame[i] = static_cast<uint8_t>(i * 13);
    ImageView img{frame, fw, fh, 3 * fw};
    for (const std::string& set : kernel_sets()) {
      set_preprocess_kernels(set);
      for (Interp in : {Interp::Bilinear, Interp::Nearest}) {
        PreprocessSpec s;
        s.width = 67, s.height = 9;
        s.interp = in;
        std::vector<float> out(3 * 67 * 9);
        preprocess(img, s, out.data(), 1);
        const uint8_t* bytes = reinterpret_cast<const uint8_t*>(out.data());
        CHECK(worst_ratio(std::vector<uint8_t>(bytes, bytes + 4 * out.size()), reference(img, s), s) <= 1.0);
      }
    }
    set_preprocess_kernels("auto");
    munmap(mem, span + page);
  }
#endif
}

static void test_errors() {
  std::vector<uint8_t> buf(12, 0);
  std::vector<float> out(3 * 4 * 4);
  PreprocessSpec s;
  s.width = s.height = 4;
  auto throws = [&](ImageView img, PreprocessSpec spec, int threads, const char* needle) {
    try {
      preprocess(img, spec, out.data(), threads);
    } catch (const PreprocessError& e) {
      return std::string(e.what()).find(needle) != std::string::npos;
    }
    return false;
  };
  CHECK(throws(ImageView{buf.data(), 0, 2, 6}, s, 1, "empty frame"));
  CHECK(throws(ImageView{buf.data(), 2, 2, 5}, s, 1, "row stride 5"));
  CHECK(throws(ImageView{buf.data(), 2, 2, 6}, s, 0, "threads"));
  PreprocessSpec bad = s;
  bad.std[1] = 0.0;
  CHECK(throws(ImageView{buf.data(), 2, 2, 6}, bad, 1, "std"));
  bool threw = false;
  try {
    set_preprocess_kernels("sse9");
  } catch (const PreprocessError&) {
    threw = true;
  }
  CHECK(threw);
  CHECK(std::string(preprocess_kernels()) == active_kernels());
}

int main() {
  std::mt19937 rng(1234);
  test_geometry();
  test_half_conversion();
  test_random_against_reference(rng);
  test_threads_identical(rng);
  test_pad_values();
  test_no_read_past_frame();
  test_errors();
  std::printf("preprocess kernels=%s, %d failed\n", preprocess_kernels(), failures);
  return failures ? 1 : 0;
}
