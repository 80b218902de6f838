// dwsep_conv2d on CUDA, one kernel: each block owns 64 output pixels; the depthwise KxK conv + bias + activation of
// those pixels is computed straight into the shared-memory A tile of the pointwise GEMM (tensor cores for fp16/bf16),
// whose epilogue applies the pointwise bias and activation. The depthwise result never goes to global memory. When it
// fits (plan_gemm), the block keeps it for all C channels and reuses it for every output-channel tile it computes;
// otherwise it is recomputed per 64-channel output tile.
#include "cuda/block_gemm.cuh"

namespace cnnkernels::cuda {

namespace {

// A[r][c] = dw_act(dw_b[c] + sum_{kh,kw} x[n, oh*s - p + kh*d, ow*s - p + kw*d, c] * dw_w[kh*kW + kw][c]).
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

}  // namespace

cudaError_t launch_dwsep(DType t, const ConvGemmArgs& a, cudaStream_t stream) {
  return launch_for<DepthwiseProducer>(t, a, stream);
}

}  // namespace cnnkernels::cuda
