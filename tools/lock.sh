#!/usr/bin/env bash
# Refresh the lock (tools/lock.txt): resolve the newest releases of everything the suite and the demo
# use in a scratch virtual environment, run `make test` there, and rewrite the lock only when it passes.
# Prints what moved. `--no-test` writes the resolved set without running the suite (bootstrapping).
#
#   make lock                       # or: tools/lock.sh [LOCKFILE] [--no-test]
#
# The lock is the whole `pip freeze` of that environment, installed with --no-deps by `make setup`;
# users of `pip install edgesdk[all]` keep pyproject's ranges. torch stays at the CPU build that
# lies on local disk (2.13.0): any other version would pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=tools/lock.txt
run_tests=1
for a in "$@"; do
  case "$a" in
    --no-test) run_tests=0 ;;
    -*) echo "lock.sh: unknown option $a" >&2; exit 2 ;;
    *) lock="$a" ;;
  esac
done
py="${PYTHON:-python3}"
venv=build/lock-venv
rm -rf "$venv"
mkdir -p build
"$py" -m venv "$venv"
pip=(pip_quiet "$venv/bin/python" -m pip install -q)
# pip warns once per package about this machine's unreadable extra index folders: noise, not news.
pip_quiet() { "$@" 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }; return "${PIPESTATUS[0]}"; }
export PYTHONNOUSERSITE=1

# Build tools the editable install uses without isolation, then torch before anything can ask for it.
"${pip[@]}" scikit-build-core pybind11 cmake ninja "torch==2.13.0"
# The project's dependencies and every extra, newest that resolve (pyproject is the source of truth).
"$venv/bin/python" - >"$venv/project-reqs.txt" <<'PY'
import re, tomllib
meta = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(meta["dependencies"])
for name, extra in meta["optional-dependencies"].items():
    if name != "tensorrt":  # TensorRT installs only where NVIDIA's own index is reachable (a Jetson has it)
        reqs += [r for r in extra if not r.startswith("edgesdk")]
print("\n".join(sorted(set(reqs))))
PY
# requirements-dev.txt's pins are dropped (newest wins) except torch's; its no-deps lines stay no-deps.
unpin() { sed -E '/^torch==/!s/==[^ #]*//'; }
{ cat "$venv/project-reqs.txt"; grep -v 'no-deps' tools/requirements-dev.txt | unpin; } | "${pip[@]}" -r /dev/stdin
grep 'no-deps' tools/requirements-dev.txt | unpin | "${pip[@]}" --no-deps -r /dev/stdin

candidate="$venv/lock.txt"
{
  echo "# The exact set the test suite passed with (python $("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])'), $(uname -m)), written by tools/lock.sh on $(date -u +%F)."
  echo "# Installed with 'pip install --no-deps -r' by 'make setup'; refresh with 'make lock'."
  "$venv/bin/python" -m pip freeze --exclude-editable | grep -v -i '^edgesdk'
} >"$candidate"

if [ "$run_tests" = 1 ]; then
  echo "lock.sh: running the suite on the candidate lock ($venv)"
  make --no-print-directory test VENV="$venv" LOCK="$candidate"
fi
old="$(mktemp)"
[ -f "$lock" ] && grep -v '^#' "$lock" >"$old" || true
cp "$candidate" "$lock"
echo "lock.sh: $lock written; what moved (old -> new):"
{ diff "$old" <(grep -v '^#' "$lock") || true; } | grep '^[<>]' || echo "  nothing"
rm -f "$old"
