#!/usr/bin/env bash
# Builds the kernel test vectors (tests/native/kernel_vectors.cpp, no Python) natively and
# for aarch64 (Debian's cross compiler), runs the aarch64 build under qemu-user, and
# requires every figure to equal the x86-64 figures bit for bit. Needs
# g++-aarch64-linux-gnu and qemu-user (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
src="csrc/kernels.cpp csrc/kernels_baseline.cpp csrc/kernels_avx2.cpp csrc/kernels_avx512.cpp tests/native/kernel_vectors.cpp"
flags="-std=c++17 -O2 -ffp-contract=off -Wall -Wextra -Wconversion -Wsign-conversion -Wshadow -Werror -Icsrc -pthread"
# native x86-64: every path this build has (the AVX files with their own flags)
g++ $flags -c csrc/kernels.cpp -DTOLERANCE_BUILD_AVX2 -DTOLERANCE_BUILD_AVX512 -o "$out/k.o"
g++ $flags -c csrc/kernels_baseline.cpp -o "$out/b.o"
g++ $flags -mavx2 -mfma -DTOLERANCE_BUILD_AVX2 -c csrc/kernels_avx2.cpp -o "$out/a2.o"
g++ $flags -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx2 -mfma -DTOLERANCE_BUILD_AVX512 \
    -c csrc/kernels_avx512.cpp -o "$out/a5.o"
g++ $flags -c tests/native/kernel_vectors.cpp -o "$out/v.o"
g++ -pthread "$out"/{k,b,a2,a5,v}.o -o "$out/native"
# aarch64: the portable (NEON) and scalar paths
aarch64-linux-gnu-g++ $flags -static $src -o "$out/arm"
"$out/native" > "$out/native.txt"
QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64 "$out/arm" > "$out/arm.txt"
if ! cmp -s "$out/native.txt" "$out/arm.txt"; then
    echo "aarch64 figures differ from x86-64:" >&2
    diff "$out/native.txt" "$out/arm.txt" | head -20 >&2
    exit 1
fi
echo "aarch64 (qemu) == x86-64: $(wc -l < "$out/native.txt") cases bit for bit"
