// up_concat_conv on CUDA: the implicit GEMM of conv2d_act (rows = output pixels at 2H x 2W, columns = output channels,
// K = 3 * 3 * (Cskip + Cup)) whose producer reads the concatenation cat([skip, up]) without it existing: a skip
// channel is gathered from the skip tensor, an upsampled channel is computed where the A chunk needs it, as the one
// input pixel (kernel 2 = stride 2: no overlap) times its tap of the transposed conv's weight, plus the bias. The
// epilogue (bias, activation) is conv2d_act's.
//
// Not tuned (no GPU was at hand): an upsampled value is recomputed for each of the up to 9 taps that read it, and again
// for every column tile when A is not resident, on CUDA cores, a C_in-long dot product each. Computing a tile's
// upsampled halo once into shared memory, or folding the transposed conv into per-phase 2x2 weights, is the next step.
#include "cuda/block_gemm.cuh"

namespace cnnkernels::cuda {

namespace {

template <typename T>
struct UpConcatProducer {
  static constexpr int bk = chunk_k(sizeof(T));
  const UpConcatArgs& u;
  const RowInfo* rows;

  static CNNKERNELS_HD int64_t gemm_k(const UpConcatArgs& u) { return 9 * (u.Cskip + u.Cup); }

  // up_b[j] + sum_ci up_x[n, h / 2, w / 2, ci] * up_w[h % 2][w % 2][ci][j], (h, w) inside the 2H x 2W map.
  __device__ __forceinline__ acc_t<T> up_at(int64_t n, int64_t h, int64_t w, int64_t j) const {
    using Acc = acc_t<T>;
    const ConvGemmArgs& a = u.conv;
    const T* __restrict__ x = static_cast<const T*>(u.up_x) + nhwc_offset(n, h / 2, w / 2, 0, a.H / 2, a.W / 2, u.Cin);
    const Acc* __restrict__ wt = static_cast<const Acc*>(u.up_w) + ((h % 2) * 2 + w % 2) * u.Cin * u.Cup + j;
    Acc s = u.up_b ? static_cast<const Acc*>(u.up_b)[j] : Acc(0);
    for (int64_t ci = 0; ci < u.Cin; ++ci) s += to_acc(x[ci]) * wt[ci * u.Cup];
    return s;
  }

  __device__ __forceinline__ void produce(int /*group*/, int64_t k0, T* dst, int ldd) const {
    const ConvGemmArgs& a = u.conv;
    const T* __restrict__ skip = static_cast<const T*>(a.x);
    const int64_t K = gemm_k(u);
    const int Ct = static_cast<int>(u.Cskip + u.Cup);
    const T zero = zero_of<T>();
    for (int e = threadIdx.x; e < kBM * bk; e += kThreads) {
      const int r = e / bk, kk = e % bk;
      const int64_t k = k0 + kk;
      T v = zero;
      const RowInfo ri = rows[r];
      if (ri.m >= 0 && k < K) {
        const KPos kp = split_k(static_cast<int>(k), Ct, 3);
        const int64_t ih = halo_origin(ri.h, 1, 1) + kp.kh, iw = halo_origin(ri.w, 1, 1) + kp.kw;
        if (ih >= 0 && ih < a.H && iw >= 0 && iw < a.W) {
          v = kp.c < u.Cskip ? skip[nhwc_offset(ri.n, ih, iw, kp.c, a.H, a.W, a.ldx)]
                             : from_acc<T>(up_at(ri.n, ih, iw, kp.c - u.Cskip));
        }
      }
      dst[r * ldd + kk] = v;
    }
  }
};

template <typename T>
// Registers budgeted for 3 blocks per SM (80 registers, no spill), fp64 for 2 (it spills in 80). Given the thread
// count alone, ptxas 13 picked 58 to 80 registers and spilled in some (bench/cuda_resources.py).
__global__ void __launch_bounds__(kThreads, sizeof(T) == 8 ? 2 : 3)
    up_concat_conv_kernel(UpConcatArgs u, SmemPlan sp, bool resident) {
  const ConvGemmArgs& a = u.conv;
  unsigned char* smem = dyn_smem();
  RowInfo* rows = reinterpret_cast<RowInfo*>(smem + sp.rows);
  rows_flat(rows, static_cast<int64_t>(blockIdx.x) * kBM, a.N * a.Ho * a.Wo, a.Ho, a.Wo);
  __syncthreads();
  UpConcatProducer<T> prod{u, rows};
  gemm_tiles<T>(prod, static_cast<const T*>(a.w), UpConcatProducer<T>::gemm_k(u), 1, a.Cog, smem, sp, resident,
                ConvEpilogue<T>{a, rows});
}

template <typename T>
cudaError_t launch_up_concat_conv_t(const UpConcatArgs& u, cudaStream_t stream) {
  const ConvGemmArgs& a = u.conv;
  const int64_t M = a.N * a.Ho * a.Wo;
  if (M == 0 || a.Cog == 0) return cudaSuccess;
  rt::DeviceInfo dev{};
  cudaError_t err = rt::device_info(dev);
  if (err != cudaSuccess) return err;
  const int64_t K = UpConcatProducer<T>::gemm_k(u);
  const LaunchPlan p = plan_gemm(ceil_div(M, kBM), ceil_div(a.Cog, kBN), K, sizeof(T), sizeof(acc_t<T>), dev.sms,
                                 dev.smem_optin, 0, false, false, 0, dev.async_copy);
  if (!p.ok) return cudaErrorInvalidConfiguration;
  auto* kernel = &up_concat_conv_kernel<T>;
  err = rt::allow_smem(kernel, p.smem.bytes);
  if (err != cudaSuccess) return err;
  CNNKERNELS_LAUNCH(kernel, dim3(static_cast<unsigned>(p.grid_x), static_cast<unsigned>(p.grid_y)), dim3(kThreads),
                    static_cast<size_t>(p.smem.bytes), stream, u, p.smem, p.resident);
  return rt::last_error();
}

}  // namespace

cudaError_t launch_up_concat_conv(DType t, const UpConcatArgs& a, cudaStream_t stream) {
  return dispatch_dtype(t, [&](auto tag) { return launch_up_concat_conv_t<decltype(tag)>(a, stream); });
}

}  // namespace cnnkernels::cuda
