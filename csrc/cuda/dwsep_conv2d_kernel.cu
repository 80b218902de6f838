// dwsep_conv2d on CUDA, one kernel: the depthwise KxK conv + bias + activation of a block's 64 GEMM rows is computed
// straight into the shared-memory A tile of the pointwise GEMM (tensor cores for fp16/bf16), whose epilogue applies
// the pointwise bias and activation. The depthwise result never goes to global memory. When it fits (plan_gemm), the
// block keeps it for all C channels and reuses it for every output-channel tile it computes; otherwise it is
// recomputed per 64-channel output tile.
// The rows are a th x tw output tile whose depthwise input halo is staged in shared memory per K chunk
// (depthwise_tile.cuh) when plan_dwsep finds one worth it; otherwise 64 flattened output pixels whose windows are read
// from global memory.
#include "cuda/block_gemm.cuh"
#include "cuda/depthwise_tile.cuh"

namespace cnnkernels::cuda {

namespace {

// A[r][c] = dw_act(dw_b[c] + sum_{kh,kw} x[n, oh*s - p + kh*d, ow*s - p + kw*d, c] * dw_w[kh*kW + kw][c]), the window
// read from global memory (flattened rows).
template <typename T>
struct DepthwiseProducer {
  static constexpr int bk = chunk_k(sizeof(T));
  const ConvGemmArgs& a;
  const RowInfo* rows;

  static CNNKERNELS_HD int64_t gemm_k(const ConvGemmArgs& a) { return a.Cg; }

  __device__ __forceinline__ void produce(int /*group*/, int64_t k0, T* dst, int ldd) const {
    using Acc = acc_t<T>;
    for (int e = threadIdx.x; e < kBM * bk; e += kThreads) {
      const int r = e / bk, kk = e % bk;
      const int64_t c = k0 + kk;
      const RowInfo ri = rows[r];
      const Acc v = (ri.m >= 0 && c < a.Cg) ? act_apply(a.dw_act, depthwise_at<T>(a, ri.n, ri.h, ri.w, c)) : Acc(0);
      dst[r * ldd + kk] = from_acc<T>(v);
    }
  }
};

// The same A from the tile's halo, staged per K chunk into the plan's `e` region: thread t computes channel t % bk of
// rows t / bk, + kThreads / bk, ... (every row of the chunk, zero for rows outside the output).
template <typename T>
struct DepthwiseHaloProducer {
  using Acc = acc_t<T>;
  static constexpr int bk = chunk_k(sizeof(T));
  static constexpr int kGroups = kThreads / bk, kRows = kBM / kGroups;
  const ConvGemmArgs& a;
  const RowInfo* rows;
  Acc* halo;
  int ld;
  TileOrigin o;
  Halo h;
  int tw, np;

  __device__ __forceinline__ void produce(int /*group*/, int64_t k0, T* dst, int ldd) const {
    __syncthreads();  // the previous chunk's depthwise may still be reading the halo
    load_halo<T>(halo, ld, a, o.n, h, k0, bk);
    __syncthreads();
    const int j = threadIdx.x % bk, g = threadIdx.x / bk;
    const int64_t c = k0 + j;
    Acc acc[kRows];
    if (c < a.Cg) depthwise_tile_pixels<kRows>(acc, halo, ld, h, a, tw, j, c, g, kGroups, np);
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int r = g + i * kGroups;
      dst[r * ldd + j] = from_acc<T>(c < a.Cg && rows[r].m >= 0 ? act_apply(a.dw_act, acc[i]) : Acc(0));
    }
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) dwsep_tile_kernel(ConvGemmArgs a, SmemPlan sp, bool resident, int th,
                                                              int tw) {
  unsigned char* smem = dyn_smem();
  RowInfo* rows = reinterpret_cast<RowInfo*>(smem + sp.rows);
  const TileOrigin o = tile_origin(blockIdx.x, th, tw, a.Ho, a.Wo);
  rows_tile(rows, o, th, tw, a.Ho, a.Wo);
  __syncthreads();
  DepthwiseHaloProducer<T> prod{a, rows, reinterpret_cast<acc_t<T>*>(smem + sp.e), sp.lde, o, tile_halo(a, o, th, tw),
                                tw, th * tw};
  gemm_tiles<T>(prod, static_cast<const T*>(a.w), a.Cg, 1, a.Cog, smem, sp, resident, ConvEpilogue<T>{a, rows});
}

template <typename T>
cudaError_t launch_dwsep_t(const ConvGemmArgs& a, cudaStream_t stream) {
  if (a.N * a.Ho * a.Wo == 0 || a.Cog == 0) return cudaSuccess;
  rt::DeviceInfo dev{};
  cudaError_t err = rt::device_info(dev);
  if (err != cudaSuccess) return err;
  const LaunchPlan p = plan_dwsep(a.N, a.Ho, a.Wo, a.Cg, a.Cog, a.kH, a.kW, a.sH, a.sW, a.dH, a.dW, sizeof(T),
                                  sizeof(acc_t<T>), dev.sms, dev.smem_optin, dev.async_copy);
  if (p.th == 0) return launch_conv_gemm_t<T, DepthwiseProducer<T>>(a, stream);  // plans the same flat tiles again
  auto* kernel = &dwsep_tile_kernel<T>;
  err = rt::allow_smem(kernel, p.smem.bytes);
  if (err != cudaSuccess) return err;
  CNNKERNELS_LAUNCH(kernel, dim3(static_cast<unsigned>(p.grid_x), static_cast<unsigned>(p.grid_y)), dim3(kThreads),
                    static_cast<size_t>(p.smem.bytes), stream, a, p.smem, p.resident, p.th, p.tw);
  return rt::last_error();
}

}  // namespace

cudaError_t launch_dwsep(DType t, const ConvGemmArgs& a, cudaStream_t stream) {
  return dispatch_dtype(t, [&](auto tag) { return launch_dwsep_t<decltype(tag)>(a, stream); });
}

}  // namespace cnnkernels::cuda
