// Fused preprocessing: the plan (taps and weights per output column and row), the row loop with
// its two-row cache, the thread split, and the portable kernels (scalar; NEON on ARM). The AVX2
// kernels live in preprocess_avx2.cpp.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "edgesdk/core.h"
#include "preprocess_kernels.h"

#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif

namespace edgesdk {
namespace detail {
namespace {

// ---------------------------------------------------------------------------------------------
// Scalar kernels: the plain formulas of preprocess_kernels.h over whole rows.

void hrow_scalar(const uint8_t* row, const PreprocessPlan& p, float* planes) {
  hrow_span_scalar(0, row, p, planes);
}

void vrow_scalar(const float* const r0[3], const float* const r1[3], float w0, float w1,
                 const PreprocessPlan& p, uint8_t* dst, ptrdiff_t plane_bytes) {
  vrow_span_scalar(0, r0, r1, w0, w1, p, dst, plane_bytes);
}

// ---------------------------------------------------------------------------------------------
// NEON kernels: no gather instruction, so four 32-bit loads fill a vector of four pixels (each
// load holds a whole BGR pixel); interleaved NHWC stores come from vst3.
#if defined(__ARM_NEON)

inline uint32x4_t load4_pixels(const uint8_t* row, const int32_t* ofs) {
  uint32x4_t v = vdupq_n_u32(load_u32(row + ofs[0]));
  v = vsetq_lane_u32(load_u32(row + ofs[1]), v, 1);
  v = vsetq_lane_u32(load_u32(row + ofs[2]), v, 2);
  v = vsetq_lane_u32(load_u32(row + ofs[3]), v, 3);
  return v;
}

inline float32x4_t channel_f32(uint32x4_t px, int c) {
  const uint32x4_t mask = vdupq_n_u32(0xff);
  uint32x4_t v = c == 0 ? px : (c == 1 ? vshrq_n_u32(px, 8) : vshrq_n_u32(px, 16));
  return vcvtq_f32_u32(vandq_u32(v, mask));
}

inline float32x4_t mul_add(float32x4_t acc, float32x4_t a, float32x4_t b) {
#if defined(__aarch64__)
  return vfmaq_f32(acc, a, b);
#else
  return vmlaq_f32(acc, a, b);
#endif
}

void hrow_neon(const uint8_t* row, const PreprocessPlan& p, float* planes) {
  const int n = p.roi.width;
  int x = 0;
  for (; x + 4 <= p.x_wide_end; x += 4) {
    const uint32x4_t g0 = load4_pixels(row, p.xofs0.data() + x);
    if (p.x_single) {
      for (int c = 0; c < 3; ++c) vst1q_f32(planes + c * n + x, channel_f32(g0, c));
      continue;
    }
    const uint32x4_t g1 = load4_pixels(row, p.xofs1.data() + x);
    const float32x4_t w0 = vld1q_f32(p.xw0.data() + x), w1 = vld1q_f32(p.xw1.data() + x);
    for (int c = 0; c < 3; ++c)
      vst1q_f32(planes + c * n + x, mul_add(vmulq_f32(channel_f32(g0, c), w0), channel_f32(g1, c), w1));
  }
  hrow_span_scalar(x, row, p, planes);
}

inline float32x4_t blend_norm(const float* a, const float* b, float32x4_t w0, float32x4_t w1,
                              float32x4_t m, float32x4_t s, int x) {
  float32x4_t v = vld1q_f32(a + x);
  if (b) v = mul_add(vmulq_f32(v, w0), vld1q_f32(b + x), w1);
  return vmulq_f32(vsubq_f32(v, m), s);
}

inline uint8x8_t to_u8(float32x4_t lo, float32x4_t hi) {
  // round half to even like rint, then saturate
#if defined(__aarch64__)
  int32x4_t il = vcvtnq_s32_f32(lo), ih = vcvtnq_s32_f32(hi);
#else
  const float32x4_t magic = vdupq_n_f32(12582912.0f);  // 1.5 * 2^23: adding it rounds to even
  int32x4_t il = vsubq_s32(vreinterpretq_s32_f32(vaddq_f32(vmaxq_f32(lo, vdupq_n_f32(0.f)), magic)),
                           vreinterpretq_s32_f32(magic));
  int32x4_t ih = vsubq_s32(vreinterpretq_s32_f32(vaddq_f32(vmaxq_f32(hi, vdupq_n_f32(0.f)), magic)),
                           vreinterpretq_s32_f32(magic));
#endif
  return vqmovun_s16(vcombine_s16(vqmovn_s32(il), vqmovn_s32(ih)));
}

void vrow_neon(const float* const r0[3], const float* const r1[3], float w0f, float w1f,
               const PreprocessPlan& p, uint8_t* dst, ptrdiff_t plane_bytes) {
  const int n = p.roi.width;
  const float32x4_t w0 = vdupq_n_f32(w0f), w1 = vdupq_n_f32(w1f);
  float32x4_t m[3], s[3];
  for (int c = 0; c < 3; ++c) m[c] = vdupq_n_f32(p.mean[c]), s[c] = vdupq_n_f32(p.scale[c]);
  const float* b[3] = {r1 ? r1[0] : nullptr, r1 ? r1[1] : nullptr, r1 ? r1[2] : nullptr};
  int x = 0;
  if (p.layout == Layout::NCHW) {
    for (int c = 0; c < 3; ++c) {
      uint8_t* d = dst + c * plane_bytes;
      for (x = 0; x + 8 <= n; x += 8) {
        float32x4_t lo = blend_norm(r0[c], b[c], w0, w1, m[c], s[c], x);
        float32x4_t hi = blend_norm(r0[c], b[c], w0, w1, m[c], s[c], x + 4);
        if (p.dtype == DType::Float32) {
          vst1q_f32(reinterpret_cast<float*>(d) + x, lo);
          vst1q_f32(reinterpret_cast<float*>(d) + x + 4, hi);
        } else if (p.dtype == DType::UInt8) {
          vst1_u8(d + x, to_u8(lo, hi));
        } else {
#if defined(__aarch64__)
          vst1q_f16(reinterpret_cast<float16_t*>(d) + x, vcombine_f16(vcvt_f16_f32(lo), vcvt_f16_f32(hi)));
#else
          break;  // armv7 without fp16 conversion: the scalar tail does it
#endif
        }
      }
    }
  } else {
    for (x = 0; x + 8 <= n; x += 8) {
      float32x4x3_t lo, hi;
      for (int c = 0; c < 3; ++c) {
        lo.val[c] = blend_norm(r0[c], b[c], w0, w1, m[c], s[c], x);
        hi.val[c] = blend_norm(r0[c], b[c], w0, w1, m[c], s[c], x + 4);
      }
      if (p.dtype == DType::Float32) {
        vst3q_f32(reinterpret_cast<float*>(dst) + 3 * x, lo);
        vst3q_f32(reinterpret_cast<float*>(dst) + 3 * x + 12, hi);
      } else if (p.dtype == DType::UInt8) {
        uint8x8x3_t u;
        for (int c = 0; c < 3; ++c) u.val[c] = to_u8(lo.val[c], hi.val[c]);
        vst3_u8(dst + 3 * x, u);
      } else {
#if defined(__aarch64__)
        float16x8x3_t h;
        for (int c = 0; c < 3; ++c) h.val[c] = vcombine_f16(vcvt_f16_f32(lo.val[c]), vcvt_f16_f32(hi.val[c]));
        vst3q_f16(reinterpret_cast<float16_t*>(dst) + 3 * x, h);
#else
        break;
#endif
      }
    }
  }
  vrow_span_scalar(x, r0, r1, w0f, w1f, p, dst, plane_bytes);
}

#endif  // __ARM_NEON

// ---------------------------------------------------------------------------------------------
// The plan.

void bilinear_axis(int src_len, int dst_len, std::vector<int32_t>& i0, std::vector<int32_t>& i1,
                   std::vector<float>& w0, std::vector<float>& w1) {
  // OpenCV INTER_LINEAR geometry, in the same double/float steps as the numpy reference
  const double scale = static_cast<double>(src_len) / dst_len;
  for (int d = 0; d < dst_len; ++d) {
    const double s = (d + 0.5) * scale - 0.5;
    const double fl = std::floor(s);
    long k = static_cast<long>(fl);
    float f = static_cast<float>(s - fl);
    if (k < 0) f = 0.f;
    k = std::min<long>(std::max<long>(k, 0), src_len - 1);
    i0[d] = static_cast<int32_t>(k);
    i1[d] = static_cast<int32_t>(std::min<long>(k + 1, src_len - 1));
    w0[d] = 1.0f - f;
    w1[d] = f;
  }
}

void nearest_axis(int src_len, int dst_len, std::vector<int32_t>& i0, std::vector<int32_t>& i1,
                  std::vector<float>& w0, std::vector<float>& w1) {
  const double scale = static_cast<double>(src_len) / dst_len;  // OpenCV INTER_NEAREST: floor(d * scale)
  for (int d = 0; d < dst_len; ++d) {
    i0[d] = i1[d] = static_cast<int32_t>(std::min<long>(static_cast<long>(d * scale), src_len - 1));
    w0[d] = 1.0f;
    w1[d] = 0.0f;
  }
}

size_t element_size(DType t) { return t == DType::Float32 ? 4 : (t == DType::Float16 ? 2 : 1); }

PreprocessPlan make_plan(const ImageView& src, const PreprocessSpec& spec) {
  PreprocessPlan p;
  p.src = src;
  p.out_w = spec.width;
  p.out_h = spec.height;
  p.roi = resize_geometry(spec, src.width, src.height);
  p.layout = spec.layout;
  p.dtype = spec.dtype;
  p.esize = element_size(spec.dtype);
  const int nw = p.roi.width, nh = p.roi.height;
  p.xofs0.resize(nw), p.xofs1.resize(nw), p.xw0.resize(nw), p.xw1.resize(nw);
  p.y0.resize(nh), p.y1.resize(nh), p.yw0.resize(nh), p.yw1.resize(nh);
  auto axis = spec.interp == Interp::Nearest ? nearest_axis : bilinear_axis;
  axis(src.width, nw, p.xofs0, p.xofs1, p.xw0, p.xw1);
  axis(src.height, nh, p.y0, p.y1, p.yw0, p.yw1);
  p.x_single = true;
  const int32_t row_bytes = 3 * src.width;
  p.x_wide_end = nw;
  for (int x = 0; x < nw; ++x) {
    p.xofs0[x] *= 3;
    p.xofs1[x] *= 3;
    if (p.xw1[x] != 0.f) p.x_single = false;
    // offsets only grow along the row: the first column whose 4-byte load would pass the row end
    if (p.x_wide_end == nw && std::max(p.xofs0[x], p.xofs1[x]) + 4 > row_bytes) p.x_wide_end = x;
  }
  const bool swap = spec.color != src.order;
  for (int c = 0; c < 3; ++c) {
    p.src_channel[c] = swap ? 2 - c : c;
    p.mean[c] = static_cast<float>(spec.mean[c]);
    p.scale[c] = static_cast<float>(1.0 / spec.std[c]);
  }
  // the pad pixel goes through the same float formula as the frame's pixels
  const int w = p.out_w;
  p.pad_row.resize(3 * static_cast<size_t>(w) * p.esize);
  for (int c = 0; c < 3; ++c) {
    const float v = (static_cast<float>(spec.pad) - p.mean[c]) * p.scale[c];
    for (int x = 0; x < w; ++x) {
      size_t i = p.layout == Layout::NCHW ? static_cast<size_t>(c) * w + x : 3 * static_cast<size_t>(x) + c;
      store_scalar(p.dtype, p.pad_row.data(), i, v);
    }
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// The row loop over output rows [y_begin, y_end).

void run_rows(const PreprocessPlan& p, const RowKernels& k, uint8_t* out, int y_begin, int y_end) {
  const int w = p.out_w, nw = p.roi.width;
  const size_t es = p.esize;
  const bool nchw = p.layout == Layout::NCHW;
  const ptrdiff_t plane_bytes = static_cast<ptrdiff_t>(w) * p.out_h * es;
  const size_t row_bytes = (nchw ? 1 : 3) * static_cast<size_t>(w) * es;  // one row of one plane / of pixels
  const size_t pix = nchw ? es : 3 * es;                                   // bytes per column in that row
  const int left = p.roi.left, right = p.roi.left + nw;

  // the last two horizontally resized source rows, reused while output rows need them
  std::vector<float> cache(2 * 3 * static_cast<size_t>(nw));
  float* slot[2] = {cache.data(), cache.data() + 3 * static_cast<size_t>(nw)};
  int tag[2] = {-1, -1};
  auto source_row = [&](int sy, int keep) -> const float* {
    for (int i = 0; i < 2; ++i)
      if (tag[i] == sy) return slot[i];
    const int i = tag[0] == keep ? 1 : 0;
    k.hrow(p.src.data + sy * p.src.row_stride, p, slot[i]);
    tag[i] = sy;
    return slot[i];
  };

  // the bytes of a source row the taps touch; a row not cached yet is prefetched one output row
  // ahead, which hides most of the memory latency of a strong downscale (a few rows of many used)
  const int32_t span_begin = nw ? p.xofs0[0] : 0, span_end = nw ? p.xofs1[nw - 1] + 3 : 0;
  auto prefetch_row = [&](int sy) {
    if (sy == tag[0] || sy == tag[1]) return;
    const uint8_t* r = p.src.data + sy * p.src.row_stride;
    for (int32_t o = span_begin; o < span_end; o += 64) __builtin_prefetch(r + o);
    __builtin_prefetch(r + span_end - 1);
  };

  for (int y = y_begin; y < y_end; ++y) {
    const int dy = y - p.roi.top;
    const bool content = dy >= 0 && dy < p.roi.height;
    for (int c = 0; c < (nchw ? 3 : 1); ++c) {
      uint8_t* line = out + c * plane_bytes + static_cast<size_t>(y) * row_bytes;
      const uint8_t* pad = p.pad_row.data() + c * row_bytes;
      if (!content) {
        std::memcpy(line, pad, row_bytes);
        continue;
      }
      std::memcpy(line, pad, left * pix);
      std::memcpy(line + right * pix, pad + right * pix, (w - right) * pix);
    }
    if (!content) continue;

    if (dy + 1 < p.roi.height) {  // start fetching the next output row's source rows
      prefetch_row(p.y0[dy + 1]);
      if (p.yw1[dy + 1] != 0.f) prefetch_row(p.y1[dy + 1]);
    }
    const bool two = p.yw1[dy] != 0.f;  // a zero weight leaves the first row exactly
    const float* h0 = source_row(p.y0[dy], two ? p.y1[dy] : -1);
    const float* h1 = two ? source_row(p.y1[dy], p.y0[dy]) : nullptr;
    const float* r0[3];
    const float* r1[3];
    for (int c = 0; c < 3; ++c) {
      r0[c] = h0 + p.src_channel[c] * static_cast<size_t>(nw);
      r1[c] = two ? h1 + p.src_channel[c] * static_cast<size_t>(nw) : nullptr;
    }
    uint8_t* dst = out + static_cast<size_t>(y) * row_bytes + left * pix;
    k.vrow(r0, two ? r1 : nullptr, p.yw0[dy], p.yw1[dy], p, dst, plane_bytes);
  }
}

const RowKernels* automatic_kernels() {
#if defined(EDGESDK_HAVE_AVX2)
  if (std::strcmp(active_kernels(), "avx2") == 0) return &kAvx2Kernels;
#endif
#if defined(__ARM_NEON)
  return &kNeonKernels;
#else
  return &kScalarKernels;
#endif
}

std::atomic<const RowKernels*> g_kernels{nullptr};

const RowKernels& kernels() {
  const RowKernels* k = g_kernels.load(std::memory_order_acquire);
  return k ? *k : *automatic_kernels();
}

}  // namespace

const RowKernels kScalarKernels = {"scalar", hrow_scalar, vrow_scalar};
#if defined(__ARM_NEON)
const RowKernels kNeonKernels = {"neon", hrow_neon, vrow_neon};
#endif

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Public API.

Rect resize_geometry(const PreprocessSpec& spec, int frame_width, int frame_height) {
  const int w = spec.width, h = spec.height;
  if (spec.resize == ResizeMode::Stretch) return {0, 0, w, h};
  const double r = std::min(static_cast<double>(w) / frame_width, static_cast<double>(h) / frame_height);
  // nearbyint rounds half to even under the default rounding mode, like Python's round()
  const int nw = std::max(1, std::min(w, static_cast<int>(std::nearbyint(frame_width * r))));
  const int nh = std::max(1, std::min(h, static_cast<int>(std::nearbyint(frame_height * r))));
  return {(w - nw) / 2, (h - nh) / 2, nw, nh};
}

size_t output_bytes(const PreprocessSpec& spec) {
  return 3 * static_cast<size_t>(spec.width) * spec.height * detail::element_size(spec.dtype);
}

void preprocess(const ImageView& frame, const PreprocessSpec& spec, void* out, int threads) {
  if (!frame.data || frame.width <= 0 || frame.height <= 0)
    throw PreprocessError("preprocess: empty frame (" + std::to_string(frame.width) + "x" +
                          std::to_string(frame.height) + ")");
  if (frame.height > 1 && std::abs(frame.row_stride) < 3 * static_cast<ptrdiff_t>(frame.width))
    throw PreprocessError("preprocess: frame row stride " + std::to_string(frame.row_stride) +
                          " bytes is smaller than a row of " + std::to_string(frame.width) + " pixels");
  // limits keep every byte offset and index in 32 bits
  if (frame.width > (1 << 24) || frame.height > (1 << 24) || spec.width <= 0 || spec.height <= 0 ||
      spec.width > (1 << 16) || spec.height > (1 << 16))
    throw PreprocessError("preprocess: size out of range: frame " + std::to_string(frame.width) + "x" +
                          std::to_string(frame.height) + ", model input " + std::to_string(spec.width) + "x" +
                          std::to_string(spec.height));
  for (int c = 0; c < 3; ++c)
    if (spec.std[c] == 0.0) throw PreprocessError("preprocess: std must be non-zero");
  if (!out) throw PreprocessError("preprocess: no output buffer");
  if (threads < 1) throw PreprocessError("preprocess: threads must be >= 1, got " + std::to_string(threads));

  const detail::PreprocessPlan plan = detail::make_plan(frame, spec);
  const detail::RowKernels& k = detail::kernels();
  uint8_t* dst = static_cast<uint8_t*>(out);
  // bands of at least 32 rows: below that a thread start costs more than the rows it would take
  const int bands = std::max(1, std::min(threads, spec.height / 32));
  if (bands == 1) return detail::run_rows(plan, k, dst, 0, spec.height);
  std::vector<std::thread> workers;
  workers.reserve(bands - 1);
  auto band = [&](int i) { return static_cast<int>(static_cast<long>(spec.height) * i / bands); };
  try {
    for (int i = 1; i < bands; ++i)
      workers.emplace_back(detail::run_rows, std::cref(plan), std::cref(k), dst, band(i), band(i + 1));
  } catch (...) {
    for (auto& t : workers) t.join();
    throw;
  }
  detail::run_rows(plan, k, dst, 0, band(1));
  for (auto& t : workers) t.join();
}

const char* preprocess_kernels() { return detail::kernels().name; }

void set_preprocess_kernels(const std::string& name) {
  const detail::RowKernels* k = nullptr;
  if (name == "auto") {
    k = nullptr;
  } else if (name == "scalar") {
    k = &detail::kScalarKernels;
#if defined(EDGESDK_HAVE_AVX2)
  } else if (name == "avx2" && std::strcmp(active_kernels(), "avx2") == 0) {
    k = &detail::kAvx2Kernels;
#endif
#if defined(__ARM_NEON)
  } else if (name == "neon") {
    k = &detail::kNeonKernels;
#endif
  } else {
    throw PreprocessError("preprocess kernels '" + name + "' are not available here (have: auto, scalar, " +
                          detail::automatic_kernels()->name + ")");
  }
  detail::g_kernels.store(k, std::memory_order_release);
}

}  // namespace edgesdk
