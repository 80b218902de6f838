// Direct NHWC convolution: an MR-pixel x NR-channel register tile, reduction over (kh, kw, c_in) against a weight
// panel laid out [kh][kw][c][NR]; input pixels are broadcast one channel at a time. A tile is MR consecutive output
// pixels in row-major order and may span output rows, so small maps (7x7) still fill whole tiles.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/kernels/common.h"

namespace cnnkernels::cpu {
namespace CPU_CAPABILITY {
namespace {

#if defined(CPU_CAPABILITY_AVX512)
constexpr int MR = 12;     // 24 accumulators + 2 weight vectors + 1 broadcast of the 32 zmm registers
#elif defined(CPU_CAPABILITY_AVX2)
constexpr int MR = 6;      // 12 accumulators + 3 of the 16 ymm registers
#else
constexpr int MR = 4;      // 8 accumulators + 3 of the 16 xmm registers
#endif

// A per-thread buffer of zeros standing in for padding pixels, so the conv inner loop has no bounds checks.
template <typename T>
const T* zeros(int64_t n) {
  thread_local std::vector<T> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.assign(n, T(0));
  return buf.data();
}

// Partial tiles: `tile` holds the MR x NR accumulators (bias included), row-major.
template <typename TY>
inline void conv_epilogue(const ConvRowsArgs& a, const float* tile, int64_t p0, int mr, int64_t n0, int nv) {
  TY* y = static_cast<TY*>(a.y.data);
  const TY* res = static_cast<const TY*>(a.res);
  for (int i = 0; i < mr; ++i) {
    const int64_t pix = p0 + i - a.oh0 * a.y.Wo;
    TY* yp = y + pix * a.y.ld + n0;
    const TY* rp = res ? res + pix * a.res_ld + n0 : nullptr;
    for (int j = 0; j < 2; ++j) {
      const int cnt = std::min(V, nv - j * V);
      if (cnt <= 0) break;
      Vec v = Vec::loadu(tile + i * NR + j * V);
      if (rp) v = v + load(rp + j * V, cnt);
      store(yp + j * V, activate(v, a.act), cnt);
    }
  }
}

// Accumulates sum_k a_i[k] * b[k][0:NR] over k < len for the M pixel pointers a_i.
// HALF: the panel's second vector is zero padding (a layer's last panel with at most V channels): skip its FMAs.
template <typename TX, bool HALF, int M>
CNNKERNELS_INLINE void conv_reduce(const TX* const (&ap)[M], const float* b, int64_t len, Vec (&acc0)[M],
                                   Vec (&acc1)[M]) {
  for (int64_t c = 0; c < len; ++c, b += NR) {
    const Vec b0 = Vec::loadu(b);
    const Vec b1 = HALF ? Vec(0.f) : Vec::loadu(b + V);
    unroll<M>([&](auto i) {
      const Vec av(to_float(ap[i][c]));
      acc0[i] = vfmadd(av, b0, acc0[i]);
      if constexpr (!HALF) acc1[i] = vfmadd(av, b1, acc1[i]);
    });
  }
}

// Accumulates the conv over pixels [p0, p0 + mr) into the accumulators (bias already in them).
template <typename TX, bool HALF, int M>
CNNKERNELS_INLINE void conv_accumulate(const ConvRowsArgs& a, const float* panel, int64_t p0, int mr, const TX* zero,
                                       Vec (&acc0)[M], Vec (&acc1)[M]) {
  const int64_t Wo = a.y.Wo, Cin = a.Cin, W = a.x.W;
  if (a.kH == 1 && a.kW == 1 && a.sH == 1 && a.sW == 1 && a.pH == 0 && a.pW == 0 && a.x.ring == 0) {
    // A plain GEMM (the 1x1 convs of every fused op): output pixel p reads input pixel p, rows are contiguous.
    const TX* base = static_cast<const TX*>(a.x.data) + (p0 - a.x.row0 * W) * a.x.ld;
    const TX* ap[M];
    unroll<M>([&](auto i) { ap[i] = i < mr ? base + i * a.x.ld : zero; });
    conv_reduce<TX, HALF, M>(ap, panel, Cin, acc0, acc1);
    return;
  }
  // Pixel coordinates by stepping, not dividing: one division per tile, not per pixel (they cost as much as a
  // short reduction).
  int64_t ohs[M], ows[M];
  {
    int64_t oh = p0 / Wo, ow = p0 - (p0 / Wo) * Wo;
    unroll<M>([&](auto i) {
      ohs[i] = oh;
      ows[i] = ow;
      if (++ow == Wo) {
        ow = 0;
        ++oh;
      }
    });
  }
  // With unit dilation and densely packed channels, one kernel row's (kw, c) taps are contiguous both in the input and
  // in the panel: reduce over kW * Cin in one loop when every pixel's taps are inside the image.
  const bool merge_kw = a.dW == 1 && a.x.ld == Cin;
  for (int64_t kh = 0; kh < a.kH; ++kh) {
    const TX* rows[M];
    bool any = false;
    unroll<M>([&](auto i) {
      const int64_t ih = ohs[i] * a.sH - a.pH + kh * a.dH;
      rows[i] = (i < mr && ih >= 0 && ih < a.x.H) ? row_ptr<TX>(a.x, ih) : nullptr;
      any |= rows[i] != nullptr;
    });
    if (!any) continue;
    const float* bk = panel + kh * a.kW * Cin * NR;
    if (merge_kw) {
      bool inside = true;
      const TX* ap[M];
      unroll<M>([&](auto i) {
        const int64_t iw0 = ows[i] * a.sW - a.pW;
        inside &= !rows[i] || (iw0 >= 0 && iw0 + a.kW <= W);
        ap[i] = rows[i] ? rows[i] + iw0 * Cin : zero;
      });
      if (inside) {
        conv_reduce<TX, HALF, M>(ap, bk, a.kW * Cin, acc0, acc1);
        continue;
      }
    }
    for (int64_t kw = 0; kw < a.kW; ++kw) {
      const TX* ap[M];
      unroll<M>([&](auto i) {
        const int64_t iw = ows[i] * a.sW - a.pW + kw * a.dW;
        ap[i] = (rows[i] && iw >= 0 && iw < W) ? rows[i] + iw * a.x.ld : zero;
      });
      conv_reduce<TX, HALF, M>(ap, bk + kw * Cin * NR, Cin, acc0, acc1);
    }
  }
}

// An M-pixel tile (M = MR, or a narrower one for the leftover pixels of a range), mr <= M of them real.
// flatten: every helper and unroll lambda that touches the accumulator arrays must be inlined, or the arrays stay in
// memory and each FMA is followed by a store (GCC gives up inlining the unroll lambdas at M = 12 without it).
template <typename TX, typename TY, int M>
__attribute__((flatten)) void conv_tile(const ConvRowsArgs& a, const float* panel, int64_t p0, int mr, int64_t n0, int nv, const TX* zero) {
  const int64_t Wo = a.y.Wo;
  // The bias initialises the accumulators, so the epilogue only adds the residual and applies the activation.
  const Vec bias0 = a.bias ? load(a.bias + n0, std::min(V, nv)) : Vec(0.f);
  const Vec bias1 = a.bias && nv > V ? load(a.bias + n0 + V, nv - V) : Vec(0.f);
  Vec acc0[M], acc1[M];
  unroll<M>([&](auto i) {
    acc0[i] = bias0;
    acc1[i] = bias1;
  });
  if (nv <= V) {
    conv_accumulate<TX, true, M>(a, panel, p0, mr, zero, acc0, acc1);
  } else {
    conv_accumulate<TX, false, M>(a, panel, p0, mr, zero, acc0, acc1);
  }
  if (mr == M && nv == NR) {  // full tile: epilogue straight from the registers
    TY* y = static_cast<TY*>(a.y.data);
    const TY* res = static_cast<const TY*>(a.res);
    unroll<M>([&](auto i) {
      const int64_t pix = p0 + i - a.oh0 * Wo;
      TY* yp = y + pix * a.y.ld + n0;
      Vec v0 = acc0[i], v1 = acc1[i];
      if (res) {
        const TY* rp = res + pix * a.res_ld + n0;
        v0 = v0 + load(rp, V);
        v1 = v1 + load(rp + V, V);
      }
      store(yp, activate(v0, a.act), V);
      store(yp + V, activate(v1, a.act), V);
    });
    return;
  }
  float tile[M * NR];  // not over-aligned: realigning the stack takes %rbp, a register the inner loops need
  unroll<M>([&](auto i) {
    acc0[i].store(tile + i * NR);
    acc1[i].store(tile + i * NR + V);
  });
  conv_epilogue<TY>(a, tile, p0, mr, n0, nv);
}

template <typename TX, typename TY>
void conv_rows_impl(const ConvRowsArgs& a) {
  const TX* zero = zeros<TX>(a.kW * a.Cin);
  const int64_t panels = (a.Cout + NR - 1) / NR;
  const int64_t panel_size = a.kH * a.kW * a.Cin * NR;
  // Pixel chunks whose input rows stay in L2 while every weight panel streams past them (panel-inner order keeps
  // one panel in L1 across the chunk's tiles).
  const int64_t chunk = std::max<int64_t>(8, (256 * 1024) / std::max<int64_t>(1, a.Cin * a.kH * 4 * a.sW) / MR) * MR;
  const int64_t P0 = a.oh0 * a.y.Wo, P1 = a.oh1 * a.y.Wo;
  for (int64_t c0 = P0; c0 < P1; c0 += chunk) {
    const int64_t c1 = std::min(P1, c0 + chunk);
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t n0 = p * NR;
      const int nv = static_cast<int>(std::min<int64_t>(NR, a.Cout - n0));
      const float* panel = a.wpack + p * panel_size;
      int64_t p0 = c0;
      for (; p0 + MR <= c1; p0 += MR) conv_tile<TX, TY, MR>(a, panel, p0, MR, n0, nv, zero);
      // Leftover pixels (49 = 8 * 6 + 1 on a 7x7 map; 1 for a batch-1 linear layer): a full tile costs MR pixels'
      // FMAs whatever mr is, while a 4-pixel tile's 8 accumulator chains already cover the FMA latency, so leftovers
      // of up to MR - 4 pixels run in 4-pixel tiles. Every pixel is summed in the same order in either tile, so the
      // result never depends on how a thread's range splits into tiles. Only fp32 gets them: every tile width is
      // another instantiation per type pair, and compile time grows with each.
      constexpr bool narrow_tiles = MR > 4 && std::is_same_v<TX, float> && std::is_same_v<TY, float>;
      for (int left = static_cast<int>(c1 - p0); left > 0;) {
        if (!narrow_tiles || left > MR - 4) {
          conv_tile<TX, TY, MR>(a, panel, p0, left, n0, nv, zero);
          break;
        }
        if constexpr (narrow_tiles) {
          conv_tile<TX, TY, 4>(a, panel, p0, std::min(left, 4), n0, nv, zero);
          p0 += 4;
          left -= 4;
        }
      }
    }
  }
}

}  // namespace

void conv_rows(const ConvRowsArgs& a) {
  with_type(a.x.type, [&](auto tx) {
    with_type(a.y.type, [&](auto ty) { conv_rows_impl<decltype(tx), decltype(ty)>(a); });
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace cnnkernels::cpu
