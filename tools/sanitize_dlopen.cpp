// Preloaded by tools/sanitize.sh into the sanitizer test runs only; never part of a product build.
// oneTBB, inside OpenVINO's runtime, dlopens libtbbbind with RTLD_DEEPBIND, which AddressSanitizer
// refuses outright (a deep-bound library would call libc's malloc past ASan's interceptors). Without
// the flag tbbbind loads as any library does: nothing else in the process defines its symbols.
#include <dlfcn.h>

extern "C" __attribute__((visibility("default"))) void* dlopen(const char* file, int flags) {
  using Dlopen = void* (*)(const char*, int);
  static const Dlopen next = reinterpret_cast<Dlopen>(dlsym(RTLD_NEXT, "dlopen"));  // ASan's, then libc's
  return next(file, flags & ~RTLD_DEEPBIND);
}
