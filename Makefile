# The two entry points the README opens with: `make demo` and `make test`. Both set up first.
#
# Everything runs in the project's own virtual environment ($(VENV), no system site-packages), filled
# from the lock (tools/lock.txt: every package at the exact version the suite was run with) before the
# native module is built against the engines it found there. `make lock` refreshes the lock.
PYTHON ?= python3
VENV ?= .venv
LOCK ?= tools/lock.txt
PY := $(CURDIR)/$(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup.stamp
# The venv's tools (edgesdk, cmake, ninja, pnnx) come first for every recipe and every test's subprocess.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONNOUSERSITE := 1

.PHONY: setup system-packages tool-envs triton-env rknn-env demo test test-fast native-test sanitize lock clean

# Debian packages, when run as root: the opencv-doc photos (calibration/evaluation), the cross
# compilers and qemu for the board builds (tests/test_cross.py), stb for edgesdk-run's image reader,
# python3-venv where the interpreter lacks ensurepip, chromium to look at report.html as a person
# would. Not root: a note, and those tests skip saying why.
DEBS := opencv-doc nlohmann-json3-dev g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user libstb-dev chromium
system-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  need=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; done; \
	  $(PYTHON) -c 'import ensurepip' 2>/dev/null || need="$$need python3-venv"; \
	  if [ -n "$$need" ]; then echo "installing Debian packages:$$need"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null; fi; \
	else echo "note: not root; install Debian's $(DEBS) for the full image set and the board builds"; fi

# The lock goes in with --no-deps: it is the whole resolved set (torch CPU 2.13.0 from the local
# wheel among it), so nothing is resolved again and pnnx/rapidocr cannot pull a CUDA torch or a
# second OpenCV. The engines are in place before the native module builds; both native engines are
# required (ON): ncnn's C++ library is built once from its PyPI sdist into ~/.cache/edgesdk
# (tools/build_ncnn.sh, ~10-14 min on 2 cores), OpenVINO's CMake config comes from the openvino wheel.
$(STAMP): pyproject.toml $(LOCK) Makefile tools/build_ncnn.sh tools/lock-triton.txt tools/lock-rknn.txt
	@$(MAKE) --no-print-directory system-packages
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --no-deps -r $(LOCK)
	@set -e; ncnn="$$(tools/build_ncnn.sh)"; \
	ov="$$($(PY) -c 'import openvino.utils as u; print(u.get_cmake_path())')"; \
	set -x; $(PIP) install -q --no-deps --no-build-isolation -e . \
	  -Ccmake.define.EDGESDK_WITH_NCNN=ON -Ccmake.define.ncnn_DIR=$$ncnn/lib/cmake/ncnn \
	  -Ccmake.define.EDGESDK_WITH_OPENVINO=ON -Ccmake.define.OpenVINO_DIR=$$ov
	$(PY) -c 'import edgesdk._native as n; print("native engines:", n.engines())'
	@$(MAKE) --no-print-directory tool-envs
	@touch $(STAMP)

# Tools whose pins clash with ours get environments of their own, cached in ~/.cache/edgesdk by their
# lock's hash (tools/lock-triton.txt, tools/lock-rknn.txt): the Triton server (~25 s cold) and the
# RKNN converter (~1.5 GB, ~1-2 min cold). Exit 2 means this platform has no wheel for the tool: a
# note, and its tests skip saying so; any other failure stops setup.
tool-envs: triton-env rknn-env
triton-env rknn-env:
	@rc=0; PYTHON=$(PYTHON) tools/$(subst -,_,$@).sh >/dev/null || rc=$$?; \
	if [ $$rc = 2 ]; then echo "note: no $@ on this platform; its tests skip"; elif [ $$rc != 0 ]; then exit $$rc; fi

setup: $(STAMP)

# Package the real EfficientNet-Lite0 for this machine's target and classify real photos with the bundle.
demo: setup
	edgesdk inspect --no-probe "$$($(PY) -m tools.models --path efficientnet_lite0)" | head -4
	edgesdk demo

test: setup native-test sanitize
	$(PY) -m pytest -q

# The C++ core's own tests (ctest), built without Python.
native-test: setup
	cmake -S . -B build/ctest -G Ninja -DEDGESDK_PYTHON=OFF -DEDGESDK_TESTS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/ctest >/dev/null
	ctest --test-dir build/ctest --output-on-failure

# The same C++ tests built with AddressSanitizer + UndefinedBehaviorSanitizer (leak checks on) in
# build/sanitize; a finding fails the run. ~40 s cold on 2 cores, seconds once built.
# `tools/sanitize.sh --python` also runs the native module's Python tests on a sanitized module.
sanitize: setup
	PYTHON=$(PY) tools/sanitize.sh

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# Refresh the lock: resolve the newest releases in a scratch environment, run the whole suite there,
# and only when it passes rewrite $(LOCK); prints what moved.
lock:
	PYTHON=$(PYTHON) tools/lock.sh $(LOCK)

clean:
	rm -rf build dist *.egg-info $(VENV)
