#pragma once
// The expansion + depthwise stage of inverted_residual and mbconv, per th x tw output tile. For each chunk of bk hidden
// channels:
//   1. expansion: act(x @ expand_w + expand_b) for the tile's input halo ((th-1)*s + kH rows x (tw-1)*s + kW columns)
//      into shared memory (zero outside the image: that is the depthwise conv's padding), a GEMM on tensor cores for
//      fp16/bf16; without expansion the halo of x itself is staged;
//   2. depthwise kH x kW + bias + act from that halo tile, handed to the caller per (row, channel): inverted_residual
//      puts it in the A tile of its projection GEMM, mbconv writes it to memory for its squeeze-and-excitation.
// The shared memory is laid out by plan_inverted_residual (tiling.h).
#include "cuda/block_gemm.cuh"

namespace cnnkernels::cuda {

template <typename T>
struct ExpandDepthwise {
  using Acc = acc_t<T>;
  static constexpr int bk = chunk_k(sizeof(T));
  const InvResArgs& a;
  const RowInfo* rows;
  unsigned char* smem;
  const SmemPlan& sp;
  int64_t n, oh0, ow0;  // image and first output pixel of the tile
  int64_t ih0, iw0;     // halo origin (may be negative)
  int64_t IH, IW;       // halo extent
  Range rh, rw;         // the part of the halo inside the image

  __device__ __forceinline__ bool inside(int64_t hp, int64_t& ih, int64_t& iw) const {
    ih = ih0 + hp / IW;
    iw = iw0 + hp % IW;
    return in_range(rh, ih) && in_range(rw, iw);
  }

  // Hidden channels h0 .. h0 + bk: expanded halo into E, then the depthwise result: store(r, j, value) for every row r
  // of the tile and j < bk (0 for rows outside the output and channels past hidden).
  template <class Store>
  __device__ __forceinline__ void compute(int64_t h0, Store&& store) const {
    const T* __restrict__ x = static_cast<const T*>(a.x);
    Acc* E = reinterpret_cast<Acc*>(smem + sp.e);
    const int64_t HP = IH * IW, C = a.C, hidden = a.hidden;
    const T zero = zero_of<T>();
    __syncthreads();  // the previous chunk's depthwise may still be reading E
    if (a.ew) {
      const T* __restrict__ ew = static_cast<const T*>(a.ew);
      const Acc* __restrict__ eb = static_cast<const Acc*>(a.eb);
      T* X = reinterpret_cast<T*>(smem + sp.x);
      T* Wt = reinterpret_cast<T*>(smem + sp.w);
      float* Ce = reinterpret_cast<float*>(smem + sp.ce);
      for (int64_t hb = 0; hb < HP; hb += kBM) {
        TileGemm<T, bk> eg;
        eg.zero();
        for (int64_t c0 = 0; c0 < C; c0 += bk) {
          for (int e = threadIdx.x; e < kBM * bk; e += kThreads) {
            const int r = e / bk, kk = e % bk;
            const int64_t hp = hb + r, c = c0 + kk;
            int64_t ih, iw;
            T v = zero;
            if (hp < HP && c < C && inside(hp, ih, iw)) v = x[nhwc_offset(n, ih, iw, c, a.H, a.W, C)];
            X[r * sp.ldx + kk] = v;
          }
          for (int e = threadIdx.x; e < bk * bk; e += kThreads) {
            const int kk = e / bk, j = e % bk;
            const int64_t c = c0 + kk, h = h0 + j;
            Wt[kk * sp.ldw + j] = (c < C && h < hidden) ? ew[c * hidden + h] : zero;
          }
          __syncthreads();
          eg.mma(X, sp.ldx, Wt, sp.ldw, bk);
          __syncthreads();
        }
        eg.epilogue(Ce, sp.ldce, [&](int r, int j, auto v) {
          const int64_t hp = hb + r, h = h0 + j;
          if (hp >= HP) return;
          int64_t ih, iw;
          Acc out = Acc(0);  // outside the image: the depthwise padding of the expanded activation
          if (h < hidden && inside(hp, ih, iw)) out = act_apply(a.act, static_cast<Acc>(v) + (eb ? eb[h] : Acc(0)));
          E[hp * sp.lde + j] = out;
        });
        __syncthreads();
      }
    } else {
      for (int64_t e = threadIdx.x; e < HP * bk; e += kThreads) {
        const int64_t hp = e / bk, h = h0 + e % bk;
        int64_t ih, iw;
        Acc v = Acc(0);
        if (h < hidden && inside(hp, ih, iw)) v = to_acc(x[nhwc_offset(n, ih, iw, h, a.H, a.W, C)]);
        E[hp * sp.lde + e % bk] = v;
      }
      __syncthreads();
    }
    const Acc* __restrict__ dw = static_cast<const Acc*>(a.dw);
    const Acc* __restrict__ db = static_cast<const Acc*>(a.db);
    for (int e = threadIdx.x; e < kBM * bk; e += kThreads) {
      const int r = e / bk, j = e % bk;
      const int64_t h = h0 + j;
      Acc v = Acc(0);
      const RowInfo ri = rows[r];
      if (ri.m >= 0 && h < hidden) {
        const int64_t lh = ri.h - oh0, lw = ri.w - ow0;
        Acc s = db[h];
        for (int kh = 0; kh < a.kH; ++kh) {
          const Acc* erow = E + ((lh * a.stride + kh) * IW + lw * a.stride) * sp.lde + j;
          for (int kw = 0; kw < a.kW; ++kw) s += erow[kw * sp.lde] * dw[(kh * a.kW + kw) * hidden + h];
        }
        v = act_apply(a.act, s);
      }
      store(r, j, v);
    }
  }

  // The GEMM producer interface (block_gemm.cuh): the depthwise result as the A chunk of the projection.
  __device__ __forceinline__ void produce(int /*group*/, int64_t h0, T* dst, int ldd) const {
    compute(h0, [&](int r, int j, Acc v) { dst[r * ldd + j] = from_acc<T>(v); });
  }
};

// The rows (output pixels) of the block's th x tw tile `tile` (image-major, then tile rows, then tile columns), and the
// stage that computes them.
template <typename T>
__device__ __forceinline__ ExpandDepthwise<T> expand_depthwise_tile(const InvResArgs& a, RowInfo* rows,
                                                                    unsigned char* smem, const SmemPlan& sp,
                                                                    int64_t tile, int th, int tw) {
  const int64_t tiles_h = ceil_div(a.Ho, th), tiles_w = ceil_div(a.Wo, tw);
  const int64_t t = tile / tiles_w;
  const int64_t n = t / tiles_h, oh0 = (t % tiles_h) * th, ow0 = (tile % tiles_w) * tw;
  for (int r = threadIdx.x; r < kBM; r += kThreads) {
    const int64_t oh = oh0 + r / tw, ow = ow0 + r % tw;
    rows[r] = (r < th * tw && oh < a.Ho && ow < a.Wo)
                  ? RowInfo{(n * a.Ho + oh) * a.Wo + ow, n, oh, ow}
                  : RowInfo{-1, 0, 0, 0};
  }
  __syncthreads();
  const int64_t ih0 = halo_origin(oh0, a.stride, a.pH), iw0 = halo_origin(ow0, a.stride, a.pW);
  const int64_t IH = halo_extent(th, a.stride, a.kH, 1), IW = halo_extent(tw, a.stride, a.kW, 1);
  return ExpandDepthwise<T>{a, rows, smem, sp, n, oh0, ow0, ih0, iw0, IH, IW, clamp_range(ih0, IH, a.H),
                            clamp_range(iw0, IW, a.W)};
}

}  // namespace cnnkernels::cuda
