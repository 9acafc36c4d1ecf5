// C++ tests of the native core; run with ctest, natively or under qemu for cross builds.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "edgesdk/core.h"

#include "check.h"

int main() {
  CHECK(std::strlen(edgesdk::version()) > 0);
  std::printf("arch=%s kernels=%s\n", edgesdk::arch(), edgesdk::active_kernels());

  // Every length around the vector width, every byte value, against the plain formula.
  for (size_t n : {0u, 1u, 7u, 8u, 9u, 31u, 256u, 1000u}) {
    std::vector<uint8_t> in(n);
    for (size_t i = 0; i < n; ++i) in[i] = static_cast<uint8_t>((i * 37 + 11) & 0xff);
    std::vector<float> out(n, -1.0f);
    edgesdk::u8_to_f32(in.data(), out.data(), n, 123.675f, 1.0f / 58.395f);
    for (size_t i = 0; i < n; ++i) {
      float want = (static_cast<float>(in[i]) - 123.675f) * (1.0f / 58.395f);
      CHECK(std::fabs(out[i] - want) <= 1e-6f);
    }
  }
  std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
