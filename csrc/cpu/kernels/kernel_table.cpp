// SIMD kernels, compiled once per ISA level (CMake sets CPU_CAPABILITY to DEFAULT, AVX2 or AVX512 and the matching
// -m flags). Written against one fp32 vector type whose width follows CPU_CAPABILITY (simd.h), so one source serves
// all. All arithmetic is fp32; fp16/bf16 tensors are widened on load and rounded once on store.
#include <algorithm>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/kernels/kernel_table.h"
#include "cpu/kernels/simd.h"

namespace cnnkernels::cpu {
namespace CPU_CAPABILITY {
namespace {

constexpr int NR = 2 * V;  // output channels per microkernel tile (= packed weight panel width)
#if defined(CPU_CAPABILITY_AVX512)
constexpr int MR = 12;     // 24 accumulators + 2 weight vectors + 1 broadcast of the 32 zmm registers
#elif defined(CPU_CAPABILITY_AVX2)
constexpr int MR = 6;      // 12 accumulators + 3 of the 16 ymm registers
#else
constexpr int MR = 4;      // 8 accumulators + 3 of the 16 xmm registers
#endif

// NaN-propagating, like torch.relu / F.relu6.
inline Vec activate(Vec v, Activation act) {
  switch (act) {
    case Activation::None: return v;
    case Activation::ReLU: return vmax(v, Vec(0.f));
    case Activation::ReLU6: return vmin(vmax(v, Vec(0.f)), Vec(6.f));
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

// A per-thread buffer of zeros standing in for padding pixels, so the conv inner loop has no bounds checks.
template <typename T>
const T* zeros(int64_t n) {
  thread_local std::vector<T> buf;
  if (static_cast<int64_t>(buf.size()) < n) buf.assign(n, T(0));
  return buf.data();
}

template <typename T>
inline const T* row_ptr(const RowsIn& in, int64_t h) {
  const int64_t slot = in.ring > 0 ? h % in.ring : h - in.row0;
  return static_cast<const T*>(in.data) + slot * in.W * in.ld;
}

// ---------------------------------------------------------------------------------------------------------------
// add_relu over a contiguous range.
template <typename T>
void add_relu_impl(const T* a, const T* b, T* out, int64_t n) {
  int64_t i = 0;
  for (; i + V <= n; i += V) store(out + i, vmax(load(a + i, V) + load(b + i, V), Vec(0.f)), V);
  if (i < n) {
    const int r = static_cast<int>(n - i);
    store(out + i, vmax(load(a + i, r) + load(b + i, r), Vec(0.f)), r);
  }
}

void add_relu(DType t, const void* a, const void* b, void* out, int64_t n) {
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    add_relu_impl(static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Direct NHWC convolution: an MR-pixel x NR-channel register tile, reduction over (kh, kw, c_in) against a weight
// panel laid out [kh][kw][c][NR]; input pixels are broadcast one channel at a time. A tile is MR consecutive output
// pixels in row-major order and may span output rows, so small maps (7x7) still fill whole tiles.

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

void conv_rows(const ConvRowsArgs& a) {
  with_type(a.x.type, [&](auto tx) {
    with_type(a.y.type, [&](auto ty) { conv_rows_impl<decltype(tx), decltype(ty)>(a); });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Depthwise NHWC convolution, vectorised over channels. Generic version: any kernel size, bounds checked per tap.
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
template <typename TX, typename TY, int K>
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
      constexpr bool regs = kThreeOperand && K * K + kDwPix + 2 <= kVecRegs;
      Vec w[regs ? K * K : 1];
      if constexpr (regs) unroll<K * K>([&](auto t) { w[t] = load(a.w + t * wld + c0, cnt); });
      auto tap = [&](int t, int n) { return load(a.w + t * wld + c0, n); };
      const Vec bias = a.bias ? load(a.bias + c0, cnt) : Vec(0.f);
      auto finish = [&](int64_t ow, Vec acc) {
        if (rrow) acc = acc + load(rrow + ow * a.res_ld + c0, cnt);
        store(yrow + ow * a.y.ld + c0, activate(acc, a.act), cnt);
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
  if (a.kH == 3 && a.kW == 3) return depthwise_rows_k<TX, TY, 3>(a);
  if (a.kH == 5 && a.kW == 5) return depthwise_rows_k<TX, TY, 5>(a);
  depthwise_rows_generic<TX, TY>(a);
}

void depthwise_rows(const DwRowsArgs& a) {
  with_type(a.x.type, [&](auto tx) {
    with_type(a.y.type, [&](auto ty) { depthwise_rows_impl<decltype(tx), decltype(ty)>(a); });
  });
}

// ---------------------------------------------------------------------------------------------------------------
template <typename TX, typename TY>
void maxpool3x3_rows_impl(const MaxPoolRowsArgs& a) {
  TY* y = static_cast<TY*>(a.y.data);
  const Vec ninf(-std::numeric_limits<float>::infinity());
  for (int64_t oh = a.oh0; oh < a.oh1; ++oh) {
    for (int64_t ow = 0; ow < a.y.Wo; ++ow) {
      TY* yp = y + ((oh - a.oh0) * a.y.Wo + ow) * a.y.ld;
      for (int64_t c0 = 0; c0 < a.C; c0 += V) {
        const int cnt = static_cast<int>(std::min<int64_t>(V, a.C - c0));
        Vec m = ninf;
        for (int64_t ih = std::max<int64_t>(oh - 1, 0); ih <= std::min(oh + 1, a.x.H - 1); ++ih) {
          const TX* row = row_ptr<TX>(a.x, ih);
          for (int64_t iw = std::max<int64_t>(ow - 1, 0); iw <= std::min(ow + 1, a.x.W - 1); ++iw)
            m = vmax(m, load(row + iw * a.x.ld + c0, cnt));
        }
        store(yp + c0, m, cnt);
      }
    }
  }
}

void maxpool3x3_rows(const MaxPoolRowsArgs& a) {
  with_type(a.x.type, [&](auto tx) {
    with_type(a.y.type, [&](auto ty) { maxpool3x3_rows_impl<decltype(tx), decltype(ty)>(a); });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Fingerprint: independent 32-bit lanes, each updated with xxHash32's round s = rotl(s + word * P2, 13) * P1. For a
// fixed word the round is a bijection of s, so a change to a single word always leaves its lane different. The
// rotation matters: with a plain s = (s ^ word) * K the top bit passes through the multiply unmixed, and negating an
// even number of floats per lane (w.mul_(-1)) left every lane unchanged.
typedef uint32_t u32v __attribute__((vector_size(V * 4), aligned(4)));  // one native vector of 32-bit lanes
constexpr int L = V;

uint64_t fingerprint(const void* data, int64_t bytes) {
  constexpr int kAcc = 8;
  constexpr int64_t kStep = kAcc * L * 4;
  constexpr uint32_t P1 = 0x9E3779B1u, P2 = 0x85EBCA77u;
  u32v acc[kAcc];
  for (int j = 0; j < kAcc; ++j)
    for (int l = 0; l < L; ++l) acc[j][l] = 0x85EBCA6Bu * static_cast<uint32_t>(j * L + l + 1);
  const char* p = static_cast<const char*>(data);
  int64_t i = 0;
  for (; i + kStep <= bytes; i += kStep)
    unroll<kAcc>([&](auto j) {
      u32v w;
      __builtin_memcpy(&w, p + i + j * L * 4, L * 4);
      const u32v t = acc[j] + w * P2;
      acc[j] = ((t << 13) | (t >> 19)) * P1;
    });
  uint64_t h = 0xCBF29CE484222325ULL ^ static_cast<uint64_t>(bytes);
  auto mix = [&h](uint64_t v) {
    h = (h ^ v) * 0x100000001B3ULL;
    h ^= h >> 29;
  };
  for (; i < bytes; ++i) mix(static_cast<unsigned char>(p[i]));
  for (int j = 0; j < kAcc; ++j)
    for (int l = 0; l < L; ++l) mix(acc[j][l]);
  return h;
}

}  // namespace

const KernelTable& table() {
#define CNNKERNELS_STR2(x) #x
#define CNNKERNELS_STR(x) CNNKERNELS_STR2(x)
  static const KernelTable t{CNNKERNELS_STR(CPU_CAPABILITY), NR, add_relu, conv_rows, depthwise_rows,
                             maxpool3x3_rows, fingerprint};
  return t;
}

}  // namespace CPU_CAPABILITY
}  // namespace cnnkernels::cpu
