// Compiled with -mavx2 -mfma -mf16c (see native/CMakeLists.txt); only called after a CPUID check.
#include <immintrin.h>

#include "edgesdk/core.h"

namespace edgesdk {

void u8_to_f32_avx2(const uint8_t* in, float* out, size_t n, float mean, float scale) {
  size_t i = 0;
  const __m256 vm = _mm256_set1_ps(mean), vs = _mm256_set1_ps(scale);
  for (; i + 8 <= n; i += 8) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i));
    __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_sub_ps(f, vm), vs));
  }
  for (; i < n; ++i) out[i] = (static_cast<float>(in[i]) - mean) * scale;
}

}  // namespace edgesdk
