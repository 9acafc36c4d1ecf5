#!/usr/bin/env bash
# The C++ tests (native/tests via ctest) built with AddressSanitizer + UndefinedBehaviorSanitizer in
# their own build directory, run with leak detection on; any finding fails the run.
#
#   tools/sanitize.sh                  # build/sanitize (~40 s to build on 2 cores, 2 s to run)
#   tools/sanitize.sh --python [PYTEST ARGS]
#       also edgesdk._native built the same way (build/sanitize-python) and the Python tests of the
#       native module run on it under the ASan runtime (minutes; not part of `make test`)
#   EDGESDK_NCNN_PREFIX=<prefix> tools/sanitize.sh   # another ncnn build (else tools/build_ncnn.sh's)
#
# Only our code is instrumented: the ncnn static library and OpenVINO's runtime come prebuilt, so
# ASan checks their memory only where our code touches it (their allocations are still tracked for
# leaks: none are reported, so no suppressions are needed).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
BUILD="${EDGESDK_SANITIZE_BUILD:-build/sanitize}"
PYTHON="${PYTHON:-python3}"
with_python=0
if [ "${1:-}" = "--python" ]; then
  with_python=1
  shift
fi

SAN="-fsanitize=address,undefined"
args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g"
      "-DCMAKE_CXX_FLAGS=$SAN -fno-omit-frame-pointer -fno-sanitize-recover=all"
      "-DCMAKE_EXE_LINKER_FLAGS=$SAN" "-DCMAKE_MODULE_LINKER_FLAGS=$SAN" "-DCMAKE_SHARED_LINKER_FLAGS=$SAN")
ncnn="${EDGESDK_NCNN_PREFIX:-}"
if [ -z "$ncnn" ]; then
  ncnn="$(tools/build_ncnn.sh)" \
    || { echo "sanitize: ncnn's C++ library did not build; engine tests skip ncnn" >&2; ncnn=""; }
fi
[ -n "$ncnn" ] && args+=("-Dncnn_DIR=$ncnn/lib/cmake/ncnn")
ov="$("$PYTHON" -c 'import openvino.utils as u; print(u.get_cmake_path())' 2>/dev/null || true)"
[ -n "$ov" ] && args+=("-DOpenVINO_DIR=$ov")

build() {  # build DIR CMAKE_ARGS...
  local dir="$1"
  shift
  mkdir -p "$dir"
  cmake -S . -B "$dir" -G Ninja "${args[@]}" "$@" >"$dir.configure.log" 2>&1 \
    || { tail -30 "$dir.configure.log" >&2; exit 1; }
  grep -E "edgesdk: (ncnn|OpenVINO) engine" "$dir.configure.log" | sed 's/^-- /sanitize: /'
  cmake --build "$dir" >"$dir.build.log" 2>&1 || { tail -40 "$dir.build.log" >&2; exit 1; }
}
build "$BUILD" -DEDGESDK_PYTHON=OFF -DEDGESDK_TESTS=ON

# OpenVINO's TBB dlopens a library with RTLD_DEEPBIND, which ASan refuses: a preloaded shim drops
# the flag (tools/sanitize_dlopen.cpp). It must come before the ASan runtime to see those calls,
# hence verify_asan_link_order=0.
shim="$(realpath "$BUILD")/libsanitize_dlopen.so"
"${CXX:-c++}" -shared -fPIC -O1 -o "$shim" tools/sanitize_dlopen.cpp -ldl

# halt_on_error with -fno-sanitize-recover: the first finding ends the test with its report.
asan="verify_asan_link_order=0:halt_on_error=1:abort_on_error=0:strict_string_checks=1"
asan+=":detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
LD_PRELOAD="$shim${LD_PRELOAD:+:$LD_PRELOAD}" ASAN_OPTIONS="$asan:detect_leaks=1" \
  ctest --test-dir "$BUILD" --output-on-failure
echo "sanitize: ASan+UBSan ctest passed in $(( $(date +%s) - start )) s"
[ "$with_python" = 1 ] || exit 0

# The instrumented module replaces the installed one in every Python process of the run (pytest and
# the subprocesses some tests start) through a sitecustomize on PYTHONPATH. Python itself is not
# instrumented and keeps objects alive at exit on purpose, so leak detection is off here.
pybuild="$BUILD-python"
build "$pybuild" -DEDGESDK_PYTHON=ON -DEDGESDK_TESTS=OFF \
  "-Dpybind11_DIR=$("$PYTHON" -m pybind11 --cmakedir)" "-DPython_EXECUTABLE=$(command -v "$PYTHON")"
module="$(realpath "$(ls "$pybuild"/native/_native.*.so)")"
mkdir -p "$pybuild/site"
cat >"$pybuild/site/sitecustomize.py" <<PY
import importlib.util, sys
spec = importlib.util.spec_from_file_location("edgesdk._native", "$module")
module = importlib.util.module_from_spec(spec)
sys.modules["edgesdk._native"] = module
spec.loader.exec_module(module)
PY
[ $# -gt 0 ] || set -- -q tests/test_native.py tests/test_native_preprocess.py tests/test_native_engine.py
pystart=$(date +%s)
PYTHONPATH="$(realpath "$pybuild/site")${PYTHONPATH:+:$PYTHONPATH}" \
  LD_PRELOAD="$shim:$("${CXX:-c++}" -print-file-name=libasan.so)${LD_PRELOAD:+:$LD_PRELOAD}" \
  ASAN_OPTIONS="$asan:detect_leaks=0" "$PYTHON" -m pytest -p no:cacheprovider "$@"
echo "sanitize: Python tests on the ASan+UBSan module passed in $(( $(date +%s) - pystart )) s"
