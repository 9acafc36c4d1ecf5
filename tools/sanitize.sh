#!/usr/bin/env bash
# The C++ tests (native/tests via ctest) built with AddressSanitizer + UndefinedBehaviorSanitizer in
# their own build directory, run with leak detection on; any finding fails the run.
#
#   tools/sanitize.sh                 # build/sanitize, ncnn from tools/build_ncnn.sh's cache
#   EDGESDK_NCNN_PREFIX=<prefix> tools/sanitize.sh   # another ncnn build (no cache lookup)
#
# Only our code is instrumented: the ncnn static library and OpenVINO's runtime come prebuilt, so
# ASan checks their memory only where our code touches it (their allocations are still tracked for
# leaks: none are reported, so no suppressions are needed).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
BUILD="${EDGESDK_SANITIZE_BUILD:-build/sanitize}"
PYTHON="${PYTHON:-python3}"

args=(-DEDGESDK_PYTHON=OFF -DEDGESDK_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
      "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g"
      "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
      "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined"
      "-DCMAKE_MODULE_LINKER_FLAGS=-fsanitize=address,undefined")
ncnn="${EDGESDK_NCNN_PREFIX:-}"
if [ -z "$ncnn" ]; then
  ncnn="$(tools/build_ncnn.sh)" || { echo "sanitize: ncnn's C++ library did not build; engine tests skip ncnn" >&2; ncnn=""; }
fi
[ -n "$ncnn" ] && args+=("-Dncnn_DIR=$ncnn/lib/cmake/ncnn")
ov="$("$PYTHON" -c 'import openvino.utils as u; print(u.get_cmake_path())' 2>/dev/null || true)"
[ -n "$ov" ] && args+=("-DOpenVINO_DIR=$ov")

mkdir -p "$BUILD"
cmake -S . -B "$BUILD" -G Ninja "${args[@]}" >"$BUILD.configure.log" 2>&1 \
  || { tail -30 "$BUILD.configure.log" >&2; exit 1; }
grep -E "edgesdk: (ncnn|OpenVINO) engine" "$BUILD.configure.log" | sed 's/^-- /sanitize: /'
cmake --build "$BUILD" >"$BUILD.build.log" 2>&1 || { tail -40 "$BUILD.build.log" >&2; exit 1; }

# OpenVINO's TBB dlopens a library with RTLD_DEEPBIND, which ASan refuses: a preloaded shim drops
# the flag (tools/sanitize_dlopen.cpp). It must come before the ASan runtime to see those calls,
# hence verify_asan_link_order=0.
shim="$(realpath "$BUILD")/libsanitize_dlopen.so"
"${CXX:-c++}" -shared -fPIC -O1 -o "$shim" tools/sanitize_dlopen.cpp -ldl

# halt_on_error with -fno-sanitize-recover: the first finding ends the test with its report.
export LD_PRELOAD="$shim${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="verify_asan_link_order=0:detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
ctest --test-dir "$BUILD" --output-on-failure
echo "sanitize: ASan+UBSan ctest passed in $(( $(date +%s) - start )) s"
