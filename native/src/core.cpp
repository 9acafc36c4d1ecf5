#include "edgesdk/core.h"

#if defined(__aarch64__) || defined(__ARM_NEON)
#include <arm_neon.h>
#endif
#if defined(__linux__) && (defined(__arm__) || defined(__aarch64__))
#include <sys/auxv.h>
#endif

namespace edgesdk {

#ifdef EDGESDK_HAVE_AVX2
void u8_to_f32_avx2(const uint8_t* in, float* out, size_t n, float mean, float scale);
#endif

const char* version() { return EDGESDK_VERSION; }
const char* arch() { return EDGESDK_ARCH; }

std::vector<std::string> compiled_isa() {
  std::vector<std::string> isa;
#ifdef EDGESDK_HAVE_AVX2
  isa.insert(isa.end(), {"avx2", "fma", "f16c"});
#endif
#if defined(__ARM_NEON)
  isa.push_back("neon");
#endif
  return isa;
}

std::vector<std::string> runtime_isa() {
  std::vector<std::string> isa;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) isa.push_back("sse4.2");
  if (__builtin_cpu_supports("avx")) isa.push_back("avx");
  if (__builtin_cpu_supports("avx2")) isa.push_back("avx2");
  if (__builtin_cpu_supports("fma")) isa.push_back("fma");
  if (__builtin_cpu_supports("avx512f")) isa.push_back("avx512f");
#elif defined(__aarch64__)
  isa.push_back("neon");  // mandatory in ARMv8-A
#if defined(__linux__)
  unsigned long hw = getauxval(AT_HWCAP);
  if (hw & (1UL << 9)) isa.push_back("fphp");   // HWCAP_FPHP: fp16 arithmetic
  if (hw & (1UL << 20)) isa.push_back("asimddp");  // HWCAP_ASIMDDP: dot product
#endif
#elif defined(__arm__) && defined(__linux__)
  if (getauxval(AT_HWCAP) & (1UL << 12)) isa.push_back("neon");  // HWCAP_ARM_NEON
#endif
  return isa;
}

static bool cpu_has_avx2() {
#if defined(EDGESDK_HAVE_AVX2)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

const char* active_kernels() {
  static const char* chosen = cpu_has_avx2() ? "avx2"
#if defined(__ARM_NEON)
                                              : "neon";
#else
                                              : "scalar";
#endif
  return chosen;
}

static void u8_to_f32_scalar(const uint8_t* in, float* out, size_t n, float mean, float scale) {
  for (size_t i = 0; i < n; ++i) out[i] = (static_cast<float>(in[i]) - mean) * scale;
}

#if defined(__ARM_NEON)
static void u8_to_f32_neon(const uint8_t* in, float* out, size_t n, float mean, float scale) {
  size_t i = 0;
  const float32x4_t vm = vdupq_n_f32(mean), vs = vdupq_n_f32(scale);
  for (; i + 8 <= n; i += 8) {
    uint16x8_t w = vmovl_u8(vld1_u8(in + i));
    float32x4_t lo = vcvtq_f32_u32(vmovl_u16(vget_low_u16(w)));
    float32x4_t hi = vcvtq_f32_u32(vmovl_u16(vget_high_u16(w)));
    vst1q_f32(out + i, vmulq_f32(vsubq_f32(lo, vm), vs));
    vst1q_f32(out + i + 4, vmulq_f32(vsubq_f32(hi, vm), vs));
  }
  u8_to_f32_scalar(in + i, out + i, n - i, mean, scale);
}
#endif

void u8_to_f32(const uint8_t* in, float* out, size_t n, float mean, float scale) {
#ifdef EDGESDK_HAVE_AVX2
  if (cpu_has_avx2()) return u8_to_f32_avx2(in, out, n, mean, scale);
#endif
#if defined(__ARM_NEON)
  return u8_to_f32_neon(in, out, n, mean, scale);
#else
  return u8_to_f32_scalar(in, out, n, mean, scale);
#endif
}

}  // namespace edgesdk
