#pragma once
// What the per-ISA kernel sources (add_relu.cpp, conv.cpp, depthwise.cpp, maxpool.cpp, fingerprint.cpp and
// kernel_table.cpp) share. CMake compiles each of them once per ISA level with CPU_CAPABILITY set to DEFAULT, AVX2 or
// AVX512 and the matching -m flags, so everything here lands in that build's namespace cnnkernels::cpu::<ISA>, and the
// kernels, written against one fp32 vector type whose width follows CPU_CAPABILITY (simd.h), serve every ISA from one
// source. All arithmetic is fp32; fp16/bf16 tensors are widened on load and rounded once on store.
// CMakeLists.txt compiles the files of one ISA as a single unit (a unity build, see there), so the names each file
// keeps in its anonymous namespace must differ from the other files'.
#include <cstdint>
#include <type_traits>
#include <utility>

#include "cpu/kernels/kernel_table.h"
#include "cpu/kernels/simd.h"

namespace cnnkernels::cpu {
namespace CPU_CAPABILITY {

// Each family's entry point, defined in its own file and linked into this ISA's table() (kernel_table.cpp). Hidden:
// the op wrappers reach them only through the table, so the library exports nothing more than table().
#pragma GCC visibility push(hidden)
void add_relu(DType t, const void* a, const void* b, void* out, int64_t n);
void conv_rows(const ConvRowsArgs& a);
void depthwise_rows(const DwRowsArgs& a);
void maxpool3x3_rows(const MaxPoolRowsArgs& a);
uint64_t fingerprint(const void* data, int64_t bytes);
#pragma GCC visibility pop

// Internal linkage, like simd.h's helpers: the inliner sees every call to them, and the hot loops' register allocation
// depends on what it inlines.
namespace {

// conv.cpp tiles with it and table() publishes it, so the op wrappers pack weights into panels of this width.
constexpr int NR = 2 * V;  // output channels per microkernel tile (= packed weight panel width)

// NaN-propagating, like torch.relu / F.relu6 / F.silu / F.hardswish, and computed as torch's CPU kernels compute
// SiLU (x / (1 + exp(-x))) and hard-swish (x * min(max(x + 3, 0), 6) / 6).
inline Vec activate(Vec v, Activation act) {
  switch (act) {
    case Activation::None: return v;
    case Activation::ReLU: return vmax(v, Vec(0.f));
    case Activation::ReLU6: return vmin(vmax(v, Vec(0.f)), Vec(6.f));
    case Activation::SiLU: return v / (Vec(1.f) + vexp(Vec(0.f) - v));
    case Activation::HardSwish: return v * vmin(vmax(v + Vec(3.f), Vec(0.f)), Vec(6.f)) / Vec(6.f);
  }
  return v;
}

// Compile-time unrolling: indices are constants from the start, so arrays of accumulators indexed by them are split
// into registers (a `#pragma unroll` happens too late for that and leaves a store per accumulator in the inner loop).
// Hot helpers that take accumulator arrays by reference must be inlined, or the arrays live in memory.
#define CNNKERNELS_INLINE inline __attribute__((always_inline))

template <typename F, int... I>
CNNKERNELS_INLINE void unroll_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, typename F>
CNNKERNELS_INLINE void unroll(F&& f) {
  unroll_impl(f, std::make_integer_sequence<int, N>{});
}

template <typename F>
inline void with_type(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::BF16: f(c10::BFloat16{}); return;
    case DType::F16: f(c10::Half{}); return;
  }
}

template <typename T>
inline const T* row_ptr(const RowsIn& in, int64_t h) {
  const int64_t slot = in.ring > 0 ? h % in.ring : h - in.row0;
  return static_cast<const T*>(in.data) + slot * in.W * in.ld;
}

}  // namespace
}  // namespace CPU_CAPABILITY
}  // namespace cnnkernels::cpu
