// inverted_residual on CUDA, one kernel. Each block owns a th x tw tile of output pixels (8x8 when it fits) and walks
// the hidden channels in chunks of bk:
//   1. expansion: act(x @ expand_w + expand_b) for the tile's input halo ((th-1)*s + kH rows x (tw-1)*s + kW columns)
//      into shared memory (zero outside the image: that is the depthwise conv's padding), a GEMM on tensor cores for
//      fp16/bf16; without expansion the halo of x itself is staged;
//   2. depthwise kH x kW + bias + act from that halo tile into the A tile of the projection GEMM;
//   3. projection GEMM, whose epilogue adds the bias and the residual.
// Neither the expanded activation nor the depthwise result goes to global memory. The depthwise result is kept for
// all hidden channels (and reused for every 64-channel output tile of the block) when it fits, see plan_gemm.
#include "cuda/block_gemm.cuh"

namespace cnnkernels::cuda {

namespace {

template <typename T>
struct IrProducer {
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

  // Hidden channels h0 .. h0 + bk: expanded halo into E, then the depthwise result into dst[64][bk].
  __device__ __forceinline__ void produce(int /*group*/, int64_t h0, T* dst, int ldd) const {
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
      dst[r * ldd + j] = from_acc<T>(v);
    }
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads)
    inverted_residual_kernel(InvResArgs a, SmemPlan sp, bool resident, int th, int tw) {
  using Acc = acc_t<T>;
  unsigned char* smem = dyn_smem();
  RowInfo* rows = reinterpret_cast<RowInfo*>(smem + sp.rows);
  const int64_t tiles_h = ceil_div(a.Ho, th), tiles_w = ceil_div(a.Wo, tw);
  const int64_t b = blockIdx.x, t = b / tiles_w;
  const int64_t n = t / tiles_h, oh0 = (t % tiles_h) * th, ow0 = (b % tiles_w) * tw;
  for (int r = threadIdx.x; r < kBM; r += kThreads) {
    const int64_t oh = oh0 + r / tw, ow = ow0 + r % tw;
    rows[r] = (r < th * tw && oh < a.Ho && ow < a.Wo)
                  ? RowInfo{(n * a.Ho + oh) * a.Wo + ow, n, static_cast<int>(oh), static_cast<int>(ow)}
                  : RowInfo{-1, 0, 0, 0};
  }
  __syncthreads();
  const int64_t ih0 = halo_origin(oh0, a.stride, a.pH), iw0 = halo_origin(ow0, a.stride, a.pW);
  const int64_t IH = halo_extent(th, a.stride, a.kH, 1), IW = halo_extent(tw, a.stride, a.kW, 1);
  IrProducer<T> prod{a, rows, smem, sp, n, oh0, ow0, ih0, iw0, IH, IW, clamp_range(ih0, IH, a.H),
                     clamp_range(iw0, IW, a.W)};
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const Acc* __restrict__ pb = static_cast<const Acc*>(a.pb);
  T* __restrict__ y = static_cast<T*>(a.y);
  const auto epi = [&](int /*group*/, int64_t n0, int r, int c, auto v) {
    const int64_t m = rows[r].m, j = n0 + c;
    if (m < 0 || j >= a.Cout) return;
    Acc s = static_cast<Acc>(v) + pb[j];
    if (a.residual) s += to_acc(x[m * a.C + j]);  // stride 1 and Cout == C: the same pixel of the input
    y[m * a.Cout + j] = from_acc<T>(s);
  };
  gemm_tiles<T>(prod, static_cast<const T*>(a.pw), a.hidden, 1, a.Cout, smem, sp, resident, epi);
}

template <typename T>
cudaError_t launch_inverted_residual_t(const InvResArgs& a, cudaStream_t stream) {
  if (a.N * a.Ho * a.Wo == 0 || a.Cout == 0) return cudaSuccess;
  rt::DeviceInfo dev{};
  cudaError_t err = rt::device_info(dev);
  if (err != cudaSuccess) return err;
  const LaunchPlan p = plan_inverted_residual(a.N, a.Ho, a.Wo, a.stride, a.kH, a.kW, a.hidden, a.Cout,
                                              a.ew != nullptr, sizeof(T), sizeof(acc_t<T>), dev.sms, dev.smem_optin);
  if (!p.ok) return cudaErrorInvalidConfiguration;
  auto* kernel = &inverted_residual_kernel<T>;
  err = rt::allow_smem(kernel, p.smem.bytes);
  if (err != cudaSuccess) return err;
  CNNKERNELS_LAUNCH(kernel, dim3(static_cast<unsigned>(p.grid_x), static_cast<unsigned>(p.grid_y)), dim3(kThreads),
              static_cast<size_t>(p.smem.bytes), stream, a, p.smem, p.resident, p.th, p.tw);
  return rt::last_error();
}

}  // namespace

cudaError_t launch_inverted_residual(DType t, const InvResArgs& a, cudaStream_t stream) {
  return dispatch_dtype(t, [&](auto tag) { return launch_inverted_residual_t<decltype(tag)>(a, stream); });
}

}  // namespace cnnkernels::cuda
