// edgesdk native core: build information and CPU dispatch.
// Thread-safety: every function here is safe to call from any thread at any time.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace edgesdk {

// The edgesdk version this library was built from (same as the Python package).
const char* version();

// Target architecture the build selected: "x86_64", "aarch64", "armv7" or "generic".
const char* arch();

// Instruction sets compiled into this library (a kernel set is only used when the CPU has it too).
std::vector<std::string> compiled_isa();

// Instruction sets this CPU reports at run time.
std::vector<std::string> runtime_isa();

// The kernel set chosen for this process: "avx2", "neon" or "scalar".
const char* active_kernels();

// out[i] = (in[i] - mean) * scale for n bytes; the basic widening step of every float preprocess.
void u8_to_f32(const uint8_t* in, float* out, size_t n, float mean, float scale);

}  // namespace edgesdk
