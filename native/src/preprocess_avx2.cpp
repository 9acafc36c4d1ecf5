// AVX2 + FMA + F16C row kernels for preprocess.cpp. Compiled with -mavx2 -mfma -mf16c (see
// native/CMakeLists.txt); only reached after the CPUID check behind active_kernels(). No standard
// library algorithms here: their instantiations would be shared with files built without AVX2.
#include <immintrin.h>

#include "preprocess_kernels.h"

namespace edgesdk {
namespace detail {
namespace {

// One source channel of 8 gathered pixels (each 32-bit lane holds B, G, R and a byte of the next).
template <int C>
inline __m256 channel(__m256i px) {
  const __m256i mask = _mm256_set1_epi32(0xff);
  return _mm256_cvtepi32_ps(_mm256_and_si256(C ? _mm256_srli_epi32(px, 8 * C) : px, mask));
}

inline __m256i gather_pixels(const uint8_t* row, const int32_t* ofs) {
  const __m256i idx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ofs));
  return _mm256_i32gather_epi32(reinterpret_cast<const int*>(row), idx, 1);
}

void hrow_avx2(const uint8_t* row, const PreprocessPlan& p, float* planes) {
  const int n = p.roi.width;
  float* d0 = planes;
  float* d1 = planes + n;
  float* d2 = planes + 2 * n;
  const int32_t* ofs0 = p.xofs0.data();
  const int32_t* ofs1 = p.xofs1.data();
  const float* xw0 = p.xw0.data();
  const float* xw1 = p.xw1.data();
  int x = 0;
  if (p.x_single) {  // one tap of weight 1 per column: nearest, or a scale landing on pixel centres
    for (; x + 8 <= p.x_wide_end; x += 8) {
      const __m256i g = gather_pixels(row, ofs0 + x);
      _mm256_storeu_ps(d0 + x, channel<0>(g));
      _mm256_storeu_ps(d1 + x, channel<1>(g));
      _mm256_storeu_ps(d2 + x, channel<2>(g));
    }
  } else {
    for (; x + 8 <= p.x_wide_end; x += 8) {
      const __m256i g0 = gather_pixels(row, ofs0 + x);
      const __m256i g1 = gather_pixels(row, ofs1 + x);
      const __m256 w0 = _mm256_loadu_ps(xw0 + x), w1 = _mm256_loadu_ps(xw1 + x);
      _mm256_storeu_ps(d0 + x, _mm256_fmadd_ps(channel<0>(g1), w1, _mm256_mul_ps(channel<0>(g0), w0)));
      _mm256_storeu_ps(d1 + x, _mm256_fmadd_ps(channel<1>(g1), w1, _mm256_mul_ps(channel<1>(g0), w0)));
      _mm256_storeu_ps(d2 + x, _mm256_fmadd_ps(channel<2>(g1), w1, _mm256_mul_ps(channel<2>(g0), w0)));
    }
  }
  hrow_span_scalar(x, row, p, planes);
}

// Store 8 floats as the output dtype at element i of dst.
template <DType D>
inline void store8(uint8_t* dst, size_t i, __m256 v) {
  if (D == DType::Float32) {
    _mm256_storeu_ps(reinterpret_cast<float*>(dst) + i, v);
  } else if (D == DType::Float16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + 2 * i),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else {
    const __m256i r = _mm256_cvtps_epi32(v);  // round half to even, like rint
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + i), _mm_packus_epi16(w, w));
  }
}

inline __m256 blend_normalise(const float* a, const float* b, __m256 w0, __m256 w1, __m256 m, __m256 s, int x) {
  __m256 v = _mm256_loadu_ps(a + x);
  if (b) v = _mm256_fmadd_ps(_mm256_loadu_ps(b + x), w1, _mm256_mul_ps(v, w0));
  return _mm256_mul_ps(_mm256_sub_ps(v, m), s);
}

template <DType D>
void vrow_avx2_t(const float* const r0[3], const float* const r1[3], float w0f, float w1f,
                 const PreprocessPlan& p, uint8_t* dst, ptrdiff_t plane_bytes) {
  const int n = p.roi.width;
  const __m256 w0 = _mm256_set1_ps(w0f), w1 = _mm256_set1_ps(w1f);
  const float* b[3] = {r1 ? r1[0] : nullptr, r1 ? r1[1] : nullptr, r1 ? r1[2] : nullptr};
  int x = 0;
  if (p.layout == Layout::NCHW) {
    for (int c = 0; c < 3; ++c) {
      const __m256 m = _mm256_set1_ps(p.mean[c]), s = _mm256_set1_ps(p.scale[c]);
      uint8_t* d = dst + c * plane_bytes;
      for (x = 0; x + 8 <= n; x += 8) store8<D>(d, x, blend_normalise(r0[c], b[c], w0, w1, m, s, x));
    }
  } else {
    __m256 m[3], s[3];
    for (int c = 0; c < 3; ++c) m[c] = _mm256_set1_ps(p.mean[c]), s[c] = _mm256_set1_ps(p.scale[c]);
    // interleave 8 pixels' three planes into 24 values: each output vector takes the same source
    // positions from all three planes, then blends keep every third lane of each
    const __m256i i0 = _mm256_setr_epi32(0, 0, 0, 1, 1, 1, 2, 2);
    const __m256i i1 = _mm256_setr_epi32(2, 3, 3, 3, 4, 4, 4, 5);
    const __m256i i2 = _mm256_setr_epi32(5, 5, 6, 6, 6, 7, 7, 7);
    for (x = 0; x + 8 <= n; x += 8) {
      const __m256 a = blend_normalise(r0[0], b[0], w0, w1, m[0], s[0], x);
      const __m256 g = blend_normalise(r0[1], b[1], w0, w1, m[1], s[1], x);
      const __m256 r = blend_normalise(r0[2], b[2], w0, w1, m[2], s[2], x);
      const __m256 t0 = _mm256_blend_ps(
          _mm256_blend_ps(_mm256_permutevar8x32_ps(a, i0), _mm256_permutevar8x32_ps(g, i0), 0x92),
          _mm256_permutevar8x32_ps(r, i0), 0x24);
      const __m256 t1 = _mm256_blend_ps(
          _mm256_blend_ps(_mm256_permutevar8x32_ps(a, i1), _mm256_permutevar8x32_ps(g, i1), 0x24),
          _mm256_permutevar8x32_ps(r, i1), 0x49);
      const __m256 t2 = _mm256_blend_ps(
          _mm256_blend_ps(_mm256_permutevar8x32_ps(a, i2), _mm256_permutevar8x32_ps(g, i2), 0x49),
          _mm256_permutevar8x32_ps(r, i2), 0x92);
      store8<D>(dst, 3 * static_cast<size_t>(x), t0);
      store8<D>(dst, 3 * static_cast<size_t>(x) + 8, t1);
      store8<D>(dst, 3 * static_cast<size_t>(x) + 16, t2);
    }
  }
  vrow_span_scalar(x, r0, r1, w0f, w1f, p, dst, plane_bytes);
}

void vrow_avx2(const float* const r0[3], const float* const r1[3], float w0, float w1,
               const PreprocessPlan& p, uint8_t* dst, ptrdiff_t plane_bytes) {
  switch (p.dtype) {
    case DType::Float32: return vrow_avx2_t<DType::Float32>(r0, r1, w0, w1, p, dst, plane_bytes);
    case DType::Float16: return vrow_avx2_t<DType::Float16>(r0, r1, w0, w1, p, dst, plane_bytes);
    case DType::UInt8: return vrow_avx2_t<DType::UInt8>(r0, r1, w0, w1, p, dst, plane_bytes);
  }
}

}  // namespace

const RowKernels kAvx2Kernels = {"avx2", hrow_avx2, vrow_avx2};

}  // namespace detail
}  // namespace edgesdk
