#pragma once
// The depthwise conv of a 2-D tile of output pixels from a shared-memory halo, shared by conv2d_act's tiled depthwise
// kernel and dwsep_conv2d's GEMM producer. Per chunk of channels the block stages the tile's input window
// ((th-1)*s + (k-1)*d + 1 rows, the same for columns, zero padding included) once, so that each input element is read
// from global memory once per tile instead of once per tap that covers it. Plans: plan_depthwise, plan_dwsep
// (tiling.h).
#include "cuda/block_gemm.cuh"

namespace cnnkernels::cuda {

// The tile `tile` of th x tw output pixels (image-major, then tile rows, then tile columns): its image and first pixel.
struct TileOrigin {
  int64_t n, oh0, ow0;
};

CNNKERNELS_HD TileOrigin tile_origin(int64_t tile, int th, int tw, int64_t Ho, int64_t Wo) {
  const int64_t tiles_h = ceil_div(Ho, th), tiles_w = ceil_div(Wo, tw);
  const int64_t t = tile / tiles_w;
  return TileOrigin{t / tiles_h, (t % tiles_h) * th, (tile % tiles_w) * tw};
}

// GEMM rows of a 2-D tile: row r = i * tw + j is output pixel (oh0 + i, ow0 + j); m < 0 past th * tw and outside the
// output. All threads; the caller synchronises.
__device__ __forceinline__ void rows_tile(RowInfo* rows, const TileOrigin& o, int th, int tw, int64_t Ho, int64_t Wo) {
  for (int r = threadIdx.x; r < kBM; r += kThreads) {
    const int64_t oh = o.oh0 + r / tw, ow = o.ow0 + r % tw;
    rows[r] = (r < th * tw && oh < Ho && ow < Wo)
                  ? RowInfo{(o.n * Ho + oh) * Wo + ow, o.n, oh, ow}
                  : RowInfo{-1, 0, 0, 0};
  }
}

// The input window of a tile under the stride / padding / dilation of `a`. IH and IW fit in int: the plans only stage
// halos that fit in shared memory.
struct Halo {
  int64_t ih0, iw0;  // origin (negative in the padding)
  int IH, IW;        // extent
  Range rh, rw;      // the part inside the image
};

CNNKERNELS_HD Halo tile_halo(const ConvGemmArgs& a, const TileOrigin& o, int th, int tw) {
  const int64_t ih0 = halo_origin(o.oh0, a.sH, a.pH), iw0 = halo_origin(o.ow0, a.sW, a.pW);
  const int64_t IH = halo_extent(th, a.sH, a.kH, a.dH), IW = halo_extent(tw, a.sW, a.kW, a.dW);
  return Halo{ih0, iw0, static_cast<int>(IH), static_cast<int>(IW), clamp_range(ih0, IH, a.H),
              clamp_range(iw0, IW, a.W)};
}

// Channels c0 .. c0 + cc of image n's halo into dst[hp * ld + j] (hp = row * IW + column of the window), converted to
// the accumulation type once here rather than at every tap; zero outside the image and for channels >= C. Channel
// fastest: a warp reads consecutive channels of a pixel (coalesced). All threads; the caller synchronises.
template <typename T>
__device__ __forceinline__ void load_halo(acc_t<T>* dst, int ld, const ConvGemmArgs& a, int64_t n, const Halo& h,
                                          int64_t c0, int cc) {
  using Acc = acc_t<T>;
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const int total = h.IH * h.IW * cc;
  for (int e = threadIdx.x; e < total; e += kThreads) {
    const int hp = e / cc, j = e - hp * cc;
    const int64_t ih = h.ih0 + hp / h.IW, iw = h.iw0 + hp % h.IW, c = c0 + j;
    Acc v = Acc(0);
    if (c < a.Cg && in_range(h.rh, ih) && in_range(h.rw, iw)) v = to_acc(x[nhwc_offset(n, ih, iw, c, a.H, a.W, a.ldx)]);
    dst[hp * ld + j] = v;
  }
}

// The depthwise conv (bias included, no activation) at channel c, staged as column j of the halo, for the tile pixels
// q = q0 + i * dq < np (i < P; the other acc[i] are left unset), tile pixel q being (q / tw, q % tw). tw must divide
// dq (the plans' tile widths are powers of two up to 8, dq is a multiple of 8): pixel i is then i * dq / tw tile rows
// below pixel 0, in its column, so one halo offset and one step locate all P. Taps outer, pixels inner: each weight
// is read once per thread, the sums stay in registers. c must be < Cg.
template <int P, typename Acc>
__device__ __forceinline__ void depthwise_tile_pixels(Acc (&acc)[P], const Acc* halo, int ld, const Halo& h,
                                                      const ConvGemmArgs& a, int tw, int j, int64_t c, int q0, int dq,
                                                      int np) {
  const Acc* __restrict__ wt = static_cast<const Acc*>(a.dw_w);
  const Acc b = a.dw_b ? static_cast<const Acc*>(a.dw_b)[c] : Acc(0);
  // Only pixels inside the tile are inside the halo: past it, rows * sH could overflow int.
  const int base = q0 < np ? ((q0 / tw) * a.sH * h.IW + (q0 % tw) * a.sW) * ld + j : 0;
  const int step = np > dq ? (dq / tw) * a.sH * h.IW * ld : 0;
#pragma unroll
  for (int i = 0; i < P; ++i) acc[i] = b;
  for (int kh = 0; kh < a.kH; ++kh) {
    for (int kw = 0; kw < a.kW; ++kw) {
      const Acc w = wt[(kh * a.kW + kw) * a.Cg + c];
      const Acc* tap = halo + base + (kh * a.dH * h.IW + kw * a.dW) * ld;
#pragma unroll
      for (int i = 0; i < P; ++i)
        if (q0 + i * dq < np) acc[i] += tap[i * step] * w;
    }
  }
}

}  // namespace cnnkernels::cuda
