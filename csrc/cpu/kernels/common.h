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

// SiLU and hard-swish as torch's CPU kernels compute them: x / (1 + exp(-x)) and x * min(max(x + 3, 0), 6) / 6.
inline bool is_smooth(Activation act) { return act == Activation::SiLU || act == Activation::HardSwish; }
inline __attribute__((always_inline)) Vec activate_smooth_inline(Vec v, Activation act) {
  if (act == Activation::SiLU) return v / (Vec(1.f) + vexp(Vec(0.f) - v));
  return v * vmin(vmax(v + Vec(3.f), Vec(0.f)), Vec(6.f)) / Vec(6.f);
}
// Out of line for activate(): inlined into a microkernel's epilogue, exp's dozen constants are hoisted out of the
// tile loops and take the registers the accumulators need (tests/packaging/test_disassembly.py saw the spills).
// Kernels that keep vectors live across the epilogue instead inline it into a variant that keeps nothing else in
// registers (depthwise_rows_k<..., SMOOTH = true>).
__attribute__((noinline)) Vec activate_smooth(Vec v, Activation act) { return activate_smooth_inline(v, act); }

// None, ReLU and ReLU6 (the smooth ones are the caller's business): no call, nothing that needs registers.
inline Vec activate_clamp(Vec v, Activation act) {
  if (act == Activation::ReLU) return vmax(v, Vec(0.f));
  if (act == Activation::ReLU6) return vmin(vmax(v, Vec(0.f)), Vec(6.f));
  return v;
}

// NaN-propagating, like torch.relu / F.relu6 / F.silu / F.hardswish.
inline Vec activate(Vec v, Activation act) {
  return is_smooth(act) ? activate_smooth(v, act) : activate_clamp(v, act);
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
