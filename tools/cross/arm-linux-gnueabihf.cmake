# CMake toolchain: 32-bit ARM Linux, hard-float ABI (Raspberry Pi 2/3/4 with a 32-bit OS) with Debian's
# cross compiler (apt-get install g++-arm-linux-gnueabihf).
#   cmake -S . -B build/armv7 -DCMAKE_TOOLCHAIN_FILE=tools/cross/arm-linux-gnueabihf.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(CMAKE_LIBRARY_ARCHITECTURE arm-linux-gnueabihf)

set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_CXX_COMPILER arm-linux-gnueabihf-g++)

# Debian's compiler defaults to armv7-a+fp (VFPv3-D16, no NEON). NEON is the baseline every ARMv7 board
# we target has (Cortex-A7/A53/A72); -mfloat-abi=hard is the gnueabihf ABI and must match the system
# libraries. ncnn adds -mfpu=neon-vfpv4 to its own VFPv4 variants, edgesdk to its core.
set(CMAKE_C_FLAGS_INIT "-march=armv7-a -mfloat-abi=hard -mfpu=neon")
set(CMAKE_CXX_FLAGS_INIT "-march=armv7-a -mfloat-abi=hard -mfpu=neon")

set(CMAKE_FIND_ROOT_PATH /usr/arm-linux-gnueabihf /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

set(CMAKE_CROSSCOMPILING_EMULATOR qemu-arm -L /usr/arm-linux-gnueabihf)
