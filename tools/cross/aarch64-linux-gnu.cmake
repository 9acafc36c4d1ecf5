# CMake toolchain: 64-bit ARM Linux (Raspberry Pi 4/5 with a 64-bit OS, Jetson, RK3588) with Debian's
# cross compiler (apt-get install g++-aarch64-linux-gnu). NEON is baseline on ARMv8-A: no extra flags.
#   cmake -S . -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=tools/cross/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Target libraries and headers: the cross toolchain's sysroot, then Debian's arm64 multiarch packages
# (/usr/lib/aarch64-linux-gnu, e.g. libpython3.11-dev:arm64). Programs come from the build machine.
# Packages (ncnn's CMake config in the edgesdk cache) may live anywhere.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# try_run and ctest run target programs through qemu (Debian's qemu-user; binfmt need not be registered).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)
