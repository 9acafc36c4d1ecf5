# Shared by the tools/cross scripts (sourced, not run): target names, toolchains, Debian packages.
# Targets: aarch64 (Debian arm64, aarch64-linux-gnu) and armv7 (Debian armhf, arm-linux-gnueabihf).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CROSS="$ROOT/tools/cross"

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# Sets ARCH, TRIPLE, DEBARCH, QEMU, QEMU_CPU, TOOLCHAIN for a target name (aarch64|arm64|armv7|armhf).
# qemu emulates the boards' cores, not its "max" CPU: a Raspberry Pi 5's Cortex-A76 (ncnn's fp16
# kernels) and a Pi 2's Cortex-A7, the smallest ARMv7 with NEON and VFPv4. QEMU_CPU overrides.
cross_target() {
  case "$1" in
    aarch64|arm64) ARCH=aarch64; TRIPLE=aarch64-linux-gnu; DEBARCH=arm64; QEMU=qemu-aarch64; CPU=cortex-a76 ;;
    armv7|armv7l|armhf) ARCH=armv7; TRIPLE=arm-linux-gnueabihf; DEBARCH=armhf; QEMU=qemu-arm; CPU=cortex-a7 ;;
    *) die "unknown target '$1' (expected aarch64 or armv7)" ;;
  esac
  export QEMU_CPU="${QEMU_CPU:-$CPU}"  # read by qemu-user itself, so ctest's runs get it too
  TOOLCHAIN="$CROSS/$TRIPLE.cmake"
}

# Installs missing Debian packages when running as root; otherwise names the apt-get line to run.
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    die "missing Debian packages; run: sudo apt-get install ${missing[*]}"
  fi
}

# The cross compiler, qemu-user to run its programs, the build tools, nlohmann-json (the manifest
# reader) and libstb-dev (JPEG/PNG for edgesdk-run); both header-only, so the build machine's copy
# serves every target.
ensure_cross() {
  local pkgs=("g++-$TRIPLE" qemu-user libstb-dev nlohmann-json3-dev)
  command -v cmake >/dev/null || pkgs+=(cmake)
  command -v ninja >/dev/null || pkgs+=(ninja-build)
  ensure_packages "${pkgs[@]}"
}

# Runs a target program under qemu-user (binfmt need not be registered), libraries from the
# cross toolchain's sysroot.
run_qemu() { "$QEMU" -L "/usr/$TRIPLE" "$@"; }

# Seconds since $1 (from `date +%s`), for the wall-time lines CI prints.
elapsed() { echo "$(( $(date +%s) - $1 ))s"; }
