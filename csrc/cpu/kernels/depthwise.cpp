// Depthwise NHWC convolution, vectorised over channels.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu/kernels/common.h"

namespace cnnkernels::cpu {
namespace CPU_CAPABILITY {
namespace {

// Generic version: any kernel size, bounds checked per tap.
template <typename TX, typename TY>
void depthwise_rows_generic(const DwRowsArgs& a) {
  const int64_t wld = a.w_ld > 0 ? a.w_ld : a.C;
  TY* y = static_cast<TY*>(a.y.data);
  const TY* res = static_cast<const TY*>(a.res);
  for (int64_t oh = a.oh0; oh < a.oh1; ++oh) {
    const int64_t kh0 = std::max<int64_t>(0, (a.pH - oh * a.sH + a.dH - 1) / a.dH);
    for (int64_t ow = 0; ow < a.y.Wo; ++ow) {
      const int64_t pix = (oh - a.oh0) * a.y.Wo + ow;
      TY* yp = y + pix * a.y.ld;
      const TY* rp = res ? res + pix * a.res_ld : nullptr;
      for (int64_t c0 = 0; c0 < a.C; c0 += V) {
        const int cnt = static_cast<int>(std::min<int64_t>(V, a.C - c0));
        Vec acc = a.bias ? load(a.bias + c0, cnt) : Vec(0.f);
        for (int64_t kh = kh0; kh < a.kH; ++kh) {
          const int64_t ih = oh * a.sH - a.pH + kh * a.dH;
          if (ih >= a.x.H) break;
          const TX* row = row_ptr<TX>(a.x, ih);
          for (int64_t kw = 0; kw < a.kW; ++kw) {
            const int64_t iw = ow * a.sW - a.pW + kw * a.dW;
            if (iw < 0 || iw >= a.x.W) continue;
            acc = vfmadd(load(row + iw * a.x.ld + c0, cnt), load(a.w + (kh * a.kW + kw) * wld + c0, cnt), acc);
          }
        }
        if (rp) acc = acc + load(rp + c0, cnt);
        store(yp + c0, activate(acc, a.act), cnt);
      }
    }
  }
}

// K x K specialisation: per channel block the K*K filter vectors are loaded once per row and reused across the row's
// pixels; interior pixels (all taps inside the image) run without bounds checks.
constexpr int kDwPix = 4;
#if defined(CPU_CAPABILITY_AVX512)
constexpr int kVecRegs = 32;
#else
constexpr int kVecRegs = 16;
#endif
constexpr bool kThreeOperand = V > 4;  // the AVX builds (VEX/EVEX encoding); not the SSE2 one

// flatten: the nested unroll lambdas must all be inlined, or the accumulators they capture by reference live in memory
// and every FMA becomes a load-FMA-store chain.
// SMOOTH (SiLU, hard-swish): the activation's exp is inlined and the filter taps are read from memory, since a call
// in the epilogue (even one never taken) would clobber every vector register, and kept taps plus exp's constants do
// not fit them. Otherwise the epilogue only clamps.
template <typename TX, typename TY, int K, bool SMOOTH>
__attribute__((flatten)) void depthwise_rows_k(const DwRowsArgs& a) {
  const int64_t wld = a.w_ld > 0 ? a.w_ld : a.C;
  TY* y = static_cast<TY*>(a.y.data);
  const TY* res = static_cast<const TY*>(a.res);
  const int64_t ld = a.x.ld, sW = a.sW, dW = a.dW, pW = a.pW;
  // Interior output columns: ow * sW - pW >= 0 and ow * sW - pW + (K - 1) * dW < W.
  const int64_t ow_lo = std::min(a.y.Wo, (pW + sW - 1) / sW);
  const int64_t hi_num = a.x.W - 1 + pW - (K - 1) * dW;
  const int64_t ow_hi = std::max(ow_lo, std::min(a.y.Wo, hi_num < 0 ? int64_t(0) : hi_num / sW + 1));
  for (int64_t oh = a.oh0; oh < a.oh1; ++oh) {
    const TX* rows[K];
    for (int kh = 0; kh < K; ++kh) {
      const int64_t ih = oh * a.sH - a.pH + kh * a.dH;
      rows[kh] = (ih >= 0 && ih < a.x.H) ? row_ptr<TX>(a.x, ih) : nullptr;
    }
    TY* yrow = y + (oh - a.oh0) * a.y.Wo * a.y.ld;
    const TY* rrow = res ? res + (oh - a.oh0) * a.y.Wo * a.res_ld : nullptr;
    for (int64_t c0 = 0; c0 < a.C; c0 += V) {
      const int cnt = static_cast<int>(std::min<int64_t>(V, a.C - c0));
      // The K*K filter vectors stay in registers across the row when they fit beside the interior's kDwPix
      // accumulators, one input and the bias; otherwise (5x5 in 16 registers) every use reloads its tap from the
      // packed weights, which costs what a reload of a spilled copy would and keeps stores out of the loop.
      // The edge pixels always read the taps from memory: they are few, and their bounds checks need registers.
      // SSE2's two-operand multiply overwrites an operand, so every use of a kept tap costs a copy and a register:
      // the portable build always reads them from memory.
      constexpr bool regs = !SMOOTH && kThreeOperand && K * K + kDwPix + 2 <= kVecRegs;
      Vec w[regs ? K * K : 1];
      if constexpr (regs) unroll<K * K>([&](auto t) { w[t] = load(a.w + t * wld + c0, cnt); });
      auto tap = [&](int t, int n) { return load(a.w + t * wld + c0, n); };
      const Vec bias = a.bias ? load(a.bias + c0, cnt) : Vec(0.f);
      auto finish = [&](int64_t ow, Vec acc) {
        if (rrow) acc = acc + load(rrow + ow * a.res_ld + c0, cnt);
        store(yrow + ow * a.y.ld + c0, SMOOTH ? activate_smooth_inline(acc, a.act) : activate_clamp(acc, a.act), cnt);
      };
      auto edge = [&](int64_t ow) {
        Vec acc = bias;
        unroll<K>([&](auto kh) {
          if (!rows[kh]) return;
          unroll<K>([&](auto kw) {
            const int64_t iw = ow * sW - pW + kw * dW;
            if (iw >= 0 && iw < a.x.W) acc = vfmadd(load(rows[kh] + iw * ld + c0, cnt), tap(kh * K + kw, cnt), acc);
          });
        });
        finish(ow, acc);
      };
      // Interior: kDwPix output pixels at once, so kDwPix independent FMA chains hide the FMA latency that a single
      // K*K-long chain per pixel is bound by. `full` lets the common whole-vector case compile to plain loads.
      auto interior = [&](auto full, auto npix, int64_t ow) __attribute__((always_inline)) {
        constexpr int P = decltype(npix)::value;
        const int n = decltype(full)::value ? V : cnt;
        Vec acc[P];
        unroll<P>([&](auto j) { acc[j] = bias; });
        const int64_t iw0 = ow * sW - pW;
        unroll<K>([&](auto kh) {
          if (!rows[kh]) return;
          const TX* p = rows[kh] + iw0 * ld + c0;
          unroll<K>([&](auto kw) {
            Vec wt;
            if constexpr (regs) wt = w[kh * K + kw]; else wt = tap(kh * K + kw, n);
            unroll<P>([&](auto j) { acc[j] = vfmadd(load(p + (j * sW + kw * dW) * ld, n), wt, acc[j]); });
          });
        });
        unroll<P>([&](auto j) { finish(ow + j, acc[j]); });
      };
      auto run_interior = [&](auto full) {
        int64_t ow = ow_lo;
        for (; ow + kDwPix <= ow_hi; ow += kDwPix) interior(full, std::integral_constant<int, kDwPix>(), ow);
        for (; ow < ow_hi; ++ow) interior(full, std::integral_constant<int, 1>(), ow);
      };
      for (int64_t ow = 0; ow < ow_lo; ++ow) edge(ow);
      if (cnt == V) run_interior(std::true_type()); else run_interior(std::false_type());
      for (int64_t ow = ow_hi; ow < a.y.Wo; ++ow) edge(ow);
    }
  }
}

template <typename TX, typename TY>
void depthwise_rows_impl(const DwRowsArgs& a) {
  const bool smooth = is_smooth(a.act);
  if (a.kH == 3 && a.kW == 3) {
    return smooth ? depthwise_rows_k<TX, TY, 3, true>(a) : depthwise_rows_k<TX, TY, 3, false>(a);
  }
  if (a.kH == 5 && a.kW == 5) {
    return smooth ? depthwise_rows_k<TX, TY, 5, true>(a) : depthwise_rows_k<TX, TY, 5, false>(a);
  }
  depthwise_rows_generic<TX, TY>(a);
}

}  // namespace

void depthwise_rows(const DwRowsArgs& a) {
  with_type(a.x.type, [&](auto tx) {
    with_type(a.y.type, [&](auto ty) { depthwise_rows_impl<decltype(tx), decltype(ty)>(a); });
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace cnnkernels::cpu
