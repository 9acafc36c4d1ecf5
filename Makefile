# The two entry points the README opens with: `make demo` and `make test`. Both set up first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .setup.stamp

.PHONY: setup demo test test-fast native-test sanitize clean

# System packages (Debian's real photos for calibration/evaluation), torch CPU from the local wheel
# before anything can ask for a CUDA build, pnnx without its torch dependency, then the project with
# its native engines: ncnn's C++ library built once from its PyPI sdist into ~/.cache/edgesdk
# (tools/build_ncnn.sh, ~10-14 min on 2 cores; CI caches that folder) and OpenVINO's CMake config
# from the openvino wheel. Either missing, the module builds without that engine.
$(STAMP): pyproject.toml tools/requirements-dev.txt Makefile tools/build_ncnn.sh
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  dpkg -s opencv-doc >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-doc >/dev/null; }; \
	else echo "note: not root; install Debian's opencv-doc for the full image set"; fi
	$(PIP) install -q "torch==2.13.0"
	grep -v 'no-deps' tools/requirements-dev.txt | $(PIP) install -q -r /dev/stdin
	grep 'no-deps' tools/requirements-dev.txt | $(PIP) install -q --no-deps -r /dev/stdin
	@ncnn="$$(tools/build_ncnn.sh)" || { echo "note: ncnn's C++ library did not build; no native ncnn engine"; ncnn=""; }; \
	ov="$$($(PYTHON) -c 'import openvino.utils as u; print(u.get_cmake_path())' 2>/dev/null)"; \
	set -x; $(PIP) install -q -e ".[dev]" $${ncnn:+-Ccmake.define.ncnn_DIR=$$ncnn/lib/cmake/ncnn} \
	  $${ov:+-Ccmake.define.OpenVINO_DIR=$$ov}
	@touch $(STAMP)

setup: $(STAMP)

# Package the real EfficientNet-Lite0 for this machine's target and classify real photos with the bundle.
demo: setup
	edgesdk inspect --no-probe "$$($(PYTHON) -m tools.models --path efficientnet_lite0)" | head -4
	edgesdk demo

test: setup native-test sanitize
	$(PYTHON) -m pytest -q

# The C++ core's own tests (ctest), built without Python.
native-test:
	cmake -S . -B build/ctest -G Ninja -DEDGESDK_PYTHON=OFF -DEDGESDK_TESTS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/ctest >/dev/null
	ctest --test-dir build/ctest --output-on-failure

# The same C++ tests built with AddressSanitizer + UndefinedBehaviorSanitizer (leak checks on) in
# build/sanitize; a finding fails the run. ~40 s cold on 2 cores, seconds once built.
# `tools/sanitize.sh --python` also runs the native module's Python tests on a sanitized module.
sanitize:
	PYTHON=$(PYTHON) tools/sanitize.sh

test-fast: setup
	$(PYTHON) -m pytest -q -m "not slow"

clean:
	rm -rf build dist *.egg-info $(STAMP)
