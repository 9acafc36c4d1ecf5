// The C++ tests' one assertion: CHECK records a failure with its place and goes on, so a run
// reports every broken property; main() returns non-zero when `failures` is not 0.
// Each test file is its own executable, so the counter is per test program.
#pragma once
#include <cstdio>

static int failures = 0;
#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                                   \
    }                                                                               \
  } while (0)
