// Private to the preprocess*.cpp files: the per-call plan and the row kernels each ISA provides.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "edgesdk/preprocess.h"

namespace edgesdk {
namespace detail {

// Everything one call needs, computed once before the row loop and shared read-only by threads.
struct PreprocessPlan {
  ImageView src;
  int out_w = 0, out_h = 0;
  Rect roi;  // the resized frame inside the output
  Layout layout = Layout::NCHW;
  DType dtype = DType::Float32;
  size_t esize = 4;  // bytes per output element

  // Per output column of the roi: byte offsets of the two taps in a source row and their weights.
  std::vector<int32_t> xofs0, xofs1;
  std::vector<float> xw0, xw1;
  int x_wide_end = 0;     // columns [0, x_wide_end) may read 4 bytes at their offsets in the row
  bool x_single = false;  // every xw1 is 0 (and xw0 1): one tap per column
  // Per output row of the roi: the two source rows and their weights.
  std::vector<int32_t> y0, y1;
  std::vector<float> yw0, yw1;

  float mean[3] = {}, scale[3] = {};  // per output channel; scale = 1 / std rounded to float
  int src_channel[3] = {0, 1, 2};     // byte of a source pixel each output channel reads
  // One output row of pad pixels in the output dtype: NCHW 3 planes of out_w, NHWC out_w * 3.
  std::vector<uint8_t> pad_row;
};

// hrow: horizontal pass of one source row into 3 float planes of roi.width, in source byte order.
// vrow: vertical blend r0 * w0 + r1 * w1 (r1 == nullptr: r0 alone, w0 is 1), normalise, convert
//   and store one output row of the roi. r0/r1 are already in output channel order. dst is the
//   first element of the roi in this row (NCHW: in plane 0; the next plane is plane_bytes on).
struct RowKernels {
  const char* name;
  void (*hrow)(const uint8_t* row, const PreprocessPlan& p, float* planes);
  void (*vrow)(const float* const r0[3], const float* const r1[3], float w0, float w1,
               const PreprocessPlan& p, uint8_t* dst, ptrdiff_t plane_bytes);
};

extern const RowKernels kScalarKernels;
#if defined(EDGESDK_HAVE_AVX2)
extern const RowKernels kAvx2Kernels;
#endif
#if defined(__ARM_NEON)
extern const RowKernels kNeonKernels;
#endif

// static: each ISA's file gets its own copy (an inline function shared across files compiled with
// different -m flags could be linked in its AVX2 form and run on a CPU without AVX2).
static inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// float -> IEEE half, round to nearest even (as numpy's astype(float16)); overflow gives inf.
static inline uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  uint32_t h;
  if (x >= 0x47800000u) {  // >= 65536, inf or nan
    h = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (x < 0x38800000u) {  // below the smallest normal half: let float addition round
    float magic, v;
    const uint32_t magic_bits = 0x3f000000u;  // 0.5: its ulp equals the half subnormal step
    std::memcpy(&magic, &magic_bits, 4);
    std::memcpy(&v, &x, 4);
    v += magic;
    uint32_t vb;
    std::memcpy(&vb, &v, 4);
    h = vb - magic_bits;
  } else {
    const uint32_t odd = (x >> 13) & 1u;
    x += 0xc8000fffu + odd;  // rebias the exponent (-112 << 23) and round half to even
    h = x >> 13;
  }
  return static_cast<uint16_t>(h | sign);
}

static inline uint8_t f32_to_u8(float v) {
  // the reference is clip(rint(v)): round half to even under the default rounding mode
  float r = v < 0.f ? 0.f : (v > 255.f ? 255.f : v);
  return static_cast<uint8_t>(__builtin_rintf(r));
}

static inline void store_scalar(DType dtype, uint8_t* dst, size_t i, float v) {
  switch (dtype) {
    case DType::Float32: std::memcpy(dst + 4 * i, &v, 4); break;
    case DType::Float16: {
      const uint16_t h = f32_to_f16(v);
      std::memcpy(dst + 2 * i, &h, 2);
      break;
    }
    case DType::UInt8: dst[i] = f32_to_u8(v); break;
  }
}

// The plain formulas over columns [x_begin, roi.width): the scalar kernels, and the tails of the
// vector kernels' rows.
static inline void hrow_span_scalar(int x_begin, const uint8_t* row, const PreprocessPlan& p, float* planes) {
  const int n = p.roi.width;
  for (int x = x_begin; x < n; ++x) {
    const uint8_t* a = row + p.xofs0[x];
    const uint8_t* b = row + p.xofs1[x];
    const float w0 = p.xw0[x], w1 = p.xw1[x];
    for (int c = 0; c < 3; ++c) planes[c * n + x] = a[c] * w0 + b[c] * w1;
  }
}

static inline void vrow_span_scalar(int x_begin, const float* const r0[3], const float* const r1[3], float w0,
                                    float w1, const PreprocessPlan& p, uint8_t* dst, ptrdiff_t plane_bytes) {
  const int n = p.roi.width;
  for (int c = 0; c < 3; ++c) {
    const float* a = r0[c];
    const float* b = r1 ? r1[c] : nullptr;
    const float m = p.mean[c], s = p.scale[c];
    for (int x = x_begin; x < n; ++x) {
      const float v = b ? a[x] * w0 + b[x] * w1 : a[x];
      if (p.layout == Layout::NCHW)
        store_scalar(p.dtype, dst + c * plane_bytes, x, (v - m) * s);
      else
        store_scalar(p.dtype, dst, 3 * static_cast<size_t>(x) + c, (v - m) * s);
    }
  }
}

}  // namespace detail
}  // namespace edgesdk
