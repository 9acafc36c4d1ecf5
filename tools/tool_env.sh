# Sourced by tools/rknn_env.sh and tools/triton_env.sh: the environment of a tool whose pins clash with
# ours, in $EDGESDK_CACHE/<name>/<hash of its lock> (default ~/.cache/edgesdk), filled from the lock with
# --no-deps, built once under a file lock (a second caller waits), `.complete` written last so an
# interrupted build is redone, `current` pointing at the newest.

# tool_env_paths NAME LOCK: sets root, key and env; true when env is already complete.
tool_env_paths() {
  tool="$1" lock="$2"
  root="${EDGESDK_CACHE:-$HOME/.cache/edgesdk}/$tool"
  key="$(sha256sum "$lock" | cut -c1-16)"
  env="$root/$key"
  [ -f "$env/.complete" ]
}

# tool_env_build PYTHON: builds env from lock with PYTHON's venv, then runs the caller's tool_env_finish
# (the tool's own layout and the import check that the set works).
tool_env_build() {
  local py="$1" start
  mkdir -p "$root"
  exec 9>"$root/.lock"
  flock 9
  if [ ! -f "$env/.complete" ]; then
    echo "${tool}_env.sh: building $env from $lock" >&2
    start=$(date +%s)
    rm -rf "$env"
    PYTHONNOUSERSITE=1 "$py" -m venv "$env"
    # pip warns once per package about this machine's unreadable extra index folders: noise, not news.
    PYTHONNOUSERSITE=1 "$env/bin/python" -m pip install -q --no-deps -r "$lock" 2>&1 \
      | { grep -v "^WARNING: Location '.*' is ignored" || true; } >&2
    [ "${PIPESTATUS[0]}" = 0 ]
    tool_env_finish
    cp "$lock" "$env/$(basename "$lock")"
    touch "$env/.complete"
    echo "${tool}_env.sh: done in $(( $(date +%s) - start )) s" >&2
  fi
  exec 9>&-
}
