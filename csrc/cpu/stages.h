#pragma once
// Building blocks the fused CPU ops are made of: thin, allocation-free calls into the SIMD kernel table.
#include <vector>

#include "cpu/kernels/kernel_table.h"

namespace cnnkernels::cpu {

// 1x1 convolution (a GEMM) over npix consecutive pixels: y[p*ldy + o] = act(sum_c x[p*ldx + c] w[o, c] + b[o] + res).
inline void pointwise(const KernelTable& k, const void* x, DType xt, int64_t ldx, int64_t npix, int64_t Cin,
                      const float* wpack, int64_t Cout, const float* bias, void* y, DType yt, int64_t ldy,
                      const void* res, int64_t res_ld, Activation act) {
  // The pixels are viewed as one long image row so the microkernel's pixel tiles run across row boundaries.
  k.conv_rows(ConvRowsArgs{RowsIn{x, xt, 1, npix, ldx, 0}, Cin, wpack, Cout, 1, 1, 1, 1, 0, 0, 1, 1, bias,
                           RowsOut{y, yt, npix, ldy}, res, res_ld, act, 0, 1});
}

// Per-thread fp32 scratch for intermediate activations between fused stages; grows, never shrinks, so steady-state
// calls allocate nothing. `slot` separates buffers that are live at the same time.
inline float* scratch(size_t n, int slot) {
  thread_local std::vector<float> bufs[4];
  auto& b = bufs[slot];
  if (b.size() < n) b.resize(n);
  return b.data();
}

}  // namespace cnnkernels::cpu
