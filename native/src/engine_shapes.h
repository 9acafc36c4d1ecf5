// Shape helpers the engines share for their error messages and checks (internal to the native library).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace edgesdk {

// "[1, 3, ?, ?]": a negative dim is dynamic.
std::string dims_str(const std::vector<int64_t>& shape);

// `got` has `want`'s rank and equals it wherever `want` is fixed (>= 0).
bool shape_fits(const std::vector<int64_t>& want, const std::vector<int64_t>& got);

}  // namespace edgesdk
