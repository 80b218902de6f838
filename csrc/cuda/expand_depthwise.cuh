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
#include "cuda/depthwise_tile.cuh"

namespace cnnkernels::cuda {

template <typename T>
struct ExpandDepthwise {
  using Acc = acc_t<T>;
  static constexpr int bk = chunk_k(sizeof(T));
  const InvResArgs& a;
  const RowInfo* rows;
  unsigned char* smem;
  const SmemPlan& sp;
  // Little per-thread state, most of it 32-bit: it stays live across the projection GEMM, whose accumulators need the
  // registers (the kernels spilled with 64-bit halo coordinates, and a 64-bit division per staged element was a
  // called subroutine). Halo coordinates fit in 32 bits because the halo fits in shared memory
  // (plan_inverted_residual), and so do output rows and columns (plan_inverted_residual rejects larger outputs).
  int64_t base;    // image pixel (n * H + ih0) * W + iw0 of the halo origin (ih0, iw0 may be negative: padding)
  int oh0, ow0;    // first output pixel of the tile
  int IH, IW;      // halo extent
  int qh0, qh1;    // halo rows [qh0, qh1) lie inside the image
  int qw0, qw1;    // halo columns likewise

  // The image pixel (n * H + ih) * W + iw under halo pixel hp, or -1 where hp lies in the padding.
  __device__ __forceinline__ int64_t pixel(int hp) const {
    const int q = hp / IW, p = hp - q * IW;
    if (q < qh0 || q >= qh1 || p < qw0 || p >= qw1) return -1;
    return base + static_cast<int64_t>(q) * a.W + p;
  }

  // Hidden channels h0 .. h0 + bk: expanded halo into E, then the depthwise result: store(r, j, value) for every row r
  // of the tile and j < bk (0 for rows outside the output and channels past hidden).
  template <class Store>
  __device__ __forceinline__ void compute(int64_t h0, Store&& store) const {
    const T* __restrict__ x = static_cast<const T*>(a.x);
    Acc* E = reinterpret_cast<Acc*>(smem + sp.e);
    const int HP = IH * IW;
    const int64_t C = a.C, hidden = a.hidden;
    const T zero = zero_of<T>();
    __syncthreads();  // the previous chunk's depthwise may still be reading E
    if (a.ew) {
      const T* __restrict__ ew = static_cast<const T*>(a.ew);
      const Acc* __restrict__ eb = static_cast<const Acc*>(a.eb);
      T* X = reinterpret_cast<T*>(smem + sp.x);
      T* Wt = reinterpret_cast<T*>(smem + sp.w);
      float* Ce = reinterpret_cast<float*>(smem + sp.ce);
      for (int hb = 0; hb < HP; hb += kBM) {
        TileGemm<T, bk> eg;
        eg.zero();
        for (int64_t c0 = 0; c0 < C; c0 += bk) {
          for (int e = threadIdx.x; e < kBM * bk; e += kThreads) {
            const int r = e / bk, kk = e % bk;
            const int hp = hb + r;
            const int64_t c = c0 + kk;
            const int64_t pix = hp < HP && c < C ? pixel(hp) : -1;
            X[r * sp.ldx + kk] = pix >= 0 ? x[pix * C + c] : zero;
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
          const int hp = hb + r;
          const int64_t h = h0 + j;
          if (hp >= HP) return;
          Acc out = Acc(0);  // outside the image: the depthwise padding of the expanded activation
          if (h < hidden && pixel(hp) >= 0) out = act_apply(a.act, static_cast<Acc>(v) + (eb ? eb[h] : Acc(0)));
          E[hp * sp.lde + j] = out;
        });
        __syncthreads();
      }
    } else {
      for (int e = threadIdx.x; e < HP * bk; e += kThreads) {
        const int hp = e / bk;
        const int64_t h = h0 + e % bk;
        const int64_t pix = h < hidden ? pixel(hp) : -1;
        const Acc v = pix >= 0 ? to_acc(x[pix * C + h]) : Acc(0);
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
        const int lh = ri.h - oh0, lw = ri.w - ow0;
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
  const TileOrigin o = tile_origin(tile, th, tw, a.Ho, a.Wo);
  const int64_t n = o.n, oh0 = o.oh0, ow0 = o.ow0;
  rows_tile(rows, o, th, tw, a.Ho, a.Wo);
  __syncthreads();
  const int64_t ih0 = halo_origin(oh0, a.stride, a.pH), iw0 = halo_origin(ow0, a.stride, a.pW);
  const int64_t IH = halo_extent(th, a.stride, a.kH, 1), IW = halo_extent(tw, a.stride, a.kW, 1);
  const Range rh = clamp_range(ih0, IH, a.H), rw = clamp_range(iw0, IW, a.W);
  return ExpandDepthwise<T>{a, rows, smem, sp, (n * a.H + ih0) * a.W + iw0,
                            static_cast<int>(oh0), static_cast<int>(ow0), static_cast<int>(IH), static_cast<int>(IW),
                            static_cast<int>(rh.lo - ih0), static_cast<int>(rh.hi - ih0),
                            static_cast<int>(rw.lo - iw0), static_cast<int>(rw.hi - iw0)};
}

}  // namespace cnnkernels::cuda
