#pragma once
// Per-element math shared by the CUDA kernels: activations, output sizes, NHWC offsets, im2col index splits, halo
// windows. Plain C++ with __host__ __device__ markers, so the same code is compiled for the host by the tests
// (tests/cuda_kernels/test_cuda_host_helpers.py, through csrc/cuda/emu/host_helpers.cpp) and by the emulated kernel
// runs.
#include <math.h>  // expf / exp: the global overloads nvcc's device code and the host compilers both have

#include <cstdint>

#if defined(__CUDACC__)
#define CNNKERNELS_HD __host__ __device__ __forceinline__
#else
#define CNNKERNELS_HD inline
#endif

namespace cnnkernels::cuda {

// Same values as cnnkernels::Activation and cnnkernels::Gate (csrc/common/checks.h); the wrappers static_assert it.
enum class Act : int { None = 0, ReLU = 1, ReLU6 = 2, SiLU = 3, HardSwish = 4 };
enum class Gate : int { Sigmoid = 0, HardSigmoid = 1 };

// e**v in the accumulation type: expf for fp32 (exp would promote to double, slow on the GPU), exp for fp64.
CNNKERNELS_HD float exp_acc(float v) { return expf(v); }
CNNKERNELS_HD double exp_acc(double v) { return exp(v); }

// The comparisons are false for NaN, so NaN falls through unchanged (torch.relu / F.relu6 keep NaN too).
template <typename A>
CNNKERNELS_HD A relu6(A v) {
  return v < A(0) ? A(0) : (v > A(6) ? A(6) : v);
}

// 1 / (1 + e**-v): 0 at -inf and 1 at +inf without a NaN (the overflowing e**-v only makes the denominator inf).
template <typename A>
CNNKERNELS_HD A sigmoid(A v) {
  return A(1) / (A(1) + exp_acc(-v));
}

// The op activations, NaN-propagating like torch. SiLU is written x / (1 + e**-x), torch's own formula, so that the
// infinities match it too: silu(+inf) = inf, silu(-inf) = -inf / inf = NaN. HardSwish likewise keeps torch's
// x * relu6(x + 3) / 6 (hardswish(-inf) = -inf * 0 = NaN).
template <typename A>
CNNKERNELS_HD A act_apply(Act a, A v) {
  switch (a) {
    case Act::ReLU: return v < A(0) ? A(0) : v;
    case Act::ReLU6: return relu6(v);
    case Act::SiLU: return v / (A(1) + exp_acc(-v));
    case Act::HardSwish: return v * relu6(v + A(3)) / A(6);
    case Act::None: break;
  }
  return v;
}

// mbconv's squeeze-and-excitation gate: sigmoid, or hardsigmoid = relu6(v + 3) / 6 (F.hardsigmoid).
template <typename A>
CNNKERNELS_HD A gate_apply(Gate g, A v) {
  return g == Gate::Sigmoid ? sigmoid(v) : relu6(v + A(3)) / A(6);
}

// max that propagates NaN like max_pool2d: once a NaN is seen it stays.
template <typename A>
CNNKERNELS_HD A max_nan(A m, A v) {
  return (v > m || v != v) ? v : m;
}

// Output size of a convolution / pooling window along one dimension (0 when the input is too small).
CNNKERNELS_HD int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  const int64_t span = in + 2 * pad - dil * (k - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

// Element offset of (n, h, w, c) in an NHWC tensor whose pixels are `ld` elements apart (ld >= C; a channel slice
// of a wider tensor has ld = the full width). 64-bit throughout.
CNNKERNELS_HD int64_t nhwc_offset(int64_t n, int64_t h, int64_t w, int64_t c, int64_t H, int64_t W, int64_t ld) {
  return ((n * H + h) * W + w) * ld + c;
}

// Linear output pixel m = (n * Ho + oh) * Wo + ow back to its coordinates.
struct PixelPos {
  int64_t n;
  int64_t h, w;  // an output may have 2**31 rows or columns or more
};
CNNKERNELS_HD PixelPos split_pixel(int64_t m, int64_t Ho, int64_t Wo) {
  const int64_t hw = Ho * Wo;
  const int64_t n = m / hw, r = m - n * hw;
  return PixelPos{n, r / Wo, r % Wo};
}

// Reduction index of the implicit GEMM, k = (kh * kW + kw) * Cg + c (channel fastest: matches the NHWC gather and the
// packed weight [groups][kH][kW][Cg][Cog]).
struct KPos {
  int kh, kw, c;
};
CNNKERNELS_HD KPos split_k(int k, int Cg, int kW) {
  const int t = k / Cg;
  return KPos{t / kW, t % kW, k - t * Cg};
}

// Input window read by the output positions [o0, o0 + tile) of a strided, dilated window: it starts at
// halo_origin (may be negative: padding) and spans halo_extent positions.
CNNKERNELS_HD int64_t halo_origin(int64_t o0, int64_t stride, int64_t pad) { return o0 * stride - pad; }
CNNKERNELS_HD int64_t halo_extent(int64_t tile, int64_t stride, int64_t k, int64_t dil) {
  return (tile - 1) * stride + (k - 1) * dil + 1;
}

// The part [lo, hi) of [origin, origin + extent) inside [0, size); empty (lo == hi) when they do not meet.
struct Range {
  int64_t lo, hi;
};
CNNKERNELS_HD Range clamp_range(int64_t origin, int64_t extent, int64_t size) {
  int64_t lo = origin < 0 ? 0 : origin;
  int64_t hi = origin + extent > size ? size : origin + extent;
  if (lo > size) lo = size;
  if (hi < lo) hi = lo;
  return Range{lo, hi};
}

CNNKERNELS_HD bool in_range(Range r, int64_t v) { return v >= r.lo && v < r.hi; }

CNNKERNELS_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
CNNKERNELS_HD int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

}  // namespace cnnkernels::cuda
