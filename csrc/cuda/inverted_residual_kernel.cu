// inverted_residual on CUDA, one kernel. Each block owns a th x tw tile of output pixels (8x8 when it fits) and walks
// the hidden channels in chunks of bk: expansion + depthwise of the chunk (expand_depthwise.cuh) straight into the A
// tile of the projection GEMM, whose epilogue adds the bias and the residual.
// Neither the expanded activation nor the depthwise result goes to global memory. The depthwise result is kept for
// all hidden channels (and reused for every 64-channel output tile of the block) when it fits, see plan_gemm.
#include "cuda/expand_depthwise.cuh"

namespace cnnkernels::cuda {

namespace {

template <typename T>
// Registers budgeted for 2 blocks per SM, the occupancy plan_gemm sizes the grid for: given the thread count alone,
// ptxas 13 picked its own target (64 to 128 registers) and spilled (bench/cuda_resources.py).
__global__ void __launch_bounds__(kThreads, 2)
    inverted_residual_kernel(InvResArgs a, SmemPlan sp, bool resident, int th, int tw) {
  using Acc = acc_t<T>;
  unsigned char* smem = dyn_smem();
  RowInfo* rows = reinterpret_cast<RowInfo*>(smem + sp.rows);
  const ExpandDepthwise<T> prod = expand_depthwise_tile<T>(a, rows, smem, sp, blockIdx.x, th, tw);
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
                                              a.ew != nullptr, sizeof(T), sizeof(acc_t<T>), dev.sms, dev.smem_optin,
                                              dev.async_copy);
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
