#!/usr/bin/env bash
# Create the Triton Inference Server's environment (nvidia-pytriton's tritonserver 2.51 with its python
# backend, numpy 1.26 and the engines an edgesdk bundle may name, see tools/lock-triton.txt) and print the
# server's launcher, which `edgesdk serve` finds by itself.
#
#   tools/triton_env.sh            # or: make triton-env
#
# Lands in $EDGESDK_CACHE/triton/<lock hash> (default ~/.cache/edgesdk) with a `.complete` marker written
# last, so an interrupted build is redone, and a lock change builds a new one beside it; `current` points
# at the newest. ~700 MB; about 25 s from pip's cache, a second when it is already there.
#
# The layout the wheel needs to serve python-backend models (it is meant to be driven by pytriton):
#   <env>/backends/python/     libtriton_python.so + triton_python_backend_utils.py from the wheel, and the
#                              python_backend_stubs/<X.Y>/triton_python_backend_stub of this python
#   <env>/bin/tritonserver     launcher: the env's bin first on PATH (the stub takes numpy and the engines
#                              from there), the wheel's bundled libraries on LD_LIBRARY_PATH,
#                              --backend-directory=<env>/backends, then the real binary with the arguments
set -euo pipefail
cd "$(dirname "$0")/.."
lock=tools/lock-triton.txt
py="${PYTHON:-python3}"
source tools/tool_env.sh

if ! tool_env_paths triton "$lock"; then
  ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$(uname -m)" != x86_64 ] || ! "$py" -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 13))'; then
    echo "triton_env.sh: nvidia-pytriton 0.7.0 ships tritonserver for x86_64 and python 3.8-3.13;" \
         "$py is $ver on $(uname -m) (set PYTHON=python3.11)" >&2
    exit 2
  fi
  tool_env_finish() {
    site="$("$env/bin/python" -c 'import pytriton, os; print(os.path.dirname(os.path.dirname(pytriton.__file__)))')"
    wheel="$site/pytriton/tritonserver"
    mkdir -p "$env/backends/python"
    cp "$wheel/backends/python/libtriton_python.so" "$wheel/backends/python/triton_python_backend_utils.py" \
       "$env/backends/python/"
    cp "$wheel/python_backend_stubs/$ver/triton_python_backend_stub" "$env/backends/python/"
    rel="${site#"$env/"}"
    cat >"$env/bin/tritonserver" <<EOF
#!/bin/sh
# tritonserver from nvidia-pytriton, set up to serve python-backend models (tools/triton_env.sh).
env="\$(cd "\$(dirname "\$0")/.." && pwd)"
PATH="\$env/bin:\$PATH" LD_LIBRARY_PATH="\$env/$rel/nvidia_pytriton.libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" \\
  exec "\$env/$rel/pytriton/tritonserver/bin/tritonserver" --backend-directory="\$env/backends" "\$@"
EOF
    chmod +x "$env/bin/tritonserver"
    # The set works: the engines and the client import beside numpy 1.26.
    "$env/bin/python" -c 'import numpy, ncnn, openvino, onnxruntime, tritonclient.http, tritonclient.grpc' >/dev/null
  }
  tool_env_build "$py"
fi
ln -sfn "$key" "$root/current"
echo "$env/bin/tritonserver"
