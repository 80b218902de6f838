// mbconv on CUDA. Without squeeze-and-excitation the block is an inverted residual and runs as its one fused kernel.
// With SE, three kernels on the caller's stream:
//   1. expansion + depthwise (expand_depthwise.cuh, the inverted residual's tiles) into the scratch d, kept in the
//      accumulation type so that the SE mean and the projection read the same unrounded values;
//   2. one block per image: the mean of d over the pixels, the two SE matvecs and the gate, into the scratch s;
//   3. the projection as a conv GEMM (block_gemm.cuh) whose producer scales d by s while loading A, and whose epilogue
//      adds the bias and the residual.
#include "cuda/expand_depthwise.cuh"

namespace cnnkernels::cuda {

namespace {

// ---- 1. expansion + depthwise into d --------------------------------------------------------------------------------
template <typename T>
// Registers budgeted for 3 blocks per SM (80 each, no spill: no GEMM accumulators here, unlike inverted_residual).
// Given the thread count alone, ptxas 13 picked 64 and spilled; for 2 blocks it took up to 114
// (bench/cuda_resources.py).
__global__ void __launch_bounds__(kThreads, 3)
    mbconv_depthwise_kernel(InvResArgs a, SmemPlan sp, int th, int tw, void* d_out) {
  using Acc = acc_t<T>;
  unsigned char* smem = dyn_smem();
  RowInfo* rows = reinterpret_cast<RowInfo*>(smem + sp.rows);
  const ExpandDepthwise<T> stage = expand_depthwise_tile<T>(a, rows, smem, sp, blockIdx.x, th, tw);
  Acc* __restrict__ d = static_cast<Acc*>(d_out);
  for (int64_t h0 = 0; h0 < a.hidden; h0 += stage.bk) {
    stage.compute(h0, [&](int r, int j, Acc v) {
      const int64_t m = rows[r].m, h = h0 + j;
      if (m >= 0 && h < a.hidden) d[m * a.hidden + h] = v;
    });
  }
}

template <typename T>
cudaError_t launch_mbconv_depthwise(const InvResArgs& a, void* d, const rt::DeviceInfo& dev, cudaStream_t stream) {
  // The inverted residual's tile plan with a single column tile: this kernel has no GEMM after the depthwise.
  const LaunchPlan p = plan_inverted_residual(a.N, a.Ho, a.Wo, a.stride, a.kH, a.kW, a.hidden, 1, a.ew != nullptr,
                                              sizeof(T), sizeof(acc_t<T>), dev.sms, dev.smem_optin, dev.async_copy);
  if (!p.ok) return cudaErrorInvalidConfiguration;
  auto* kernel = &mbconv_depthwise_kernel<T>;
  const cudaError_t err = rt::allow_smem(kernel, p.smem.bytes);
  if (err != cudaSuccess) return err;
  CNNKERNELS_LAUNCH(kernel, dim3(static_cast<unsigned>(p.grid_x)), dim3(kThreads), static_cast<size_t>(p.smem.bytes),
                    stream, a, p.smem, p.th, p.tw, d);
  return rt::last_error();
}

// ---- 2. squeeze-and-excitation gate ---------------------------------------------------------------------------------
// Threads per channel of the pixel sum: all 256 threads stay busy when there are fewer channels than threads.
CNNKERNELS_HD int64_t se_lanes(int64_t hidden) { return hidden >= kThreads ? 1 : kThreads / hidden; }

// Shared memory of se_gate_kernel, in accumulation-type elements: the lanes' partial sums, the mean, the reduced SE
// vector.
CNNKERNELS_HD int64_t se_smem_elems(int64_t hidden, int64_t squeeze) {
  return se_lanes(hidden) * hidden + hidden + squeeze;
}

// s[n][c] = gate(se_eb[c] + sum_j se_ew[c][j] * se_act(se_rb[j] + sum_k se_rw[j][k] * mean_p d[n][p][k])), block n.
// The partial sums are combined in a fixed order: the gate does not depend on the timing of the threads.
template <typename Acc>
__global__ void __launch_bounds__(kThreads) se_gate_kernel(MBConvArgs a) {
  const int64_t C = a.ir.hidden, S = a.squeeze, P = a.ir.Ho * a.ir.Wo, lanes = se_lanes(C);
  const int64_t n = blockIdx.x;
  Acc* part = reinterpret_cast<Acc*>(dyn_smem());
  Acc* mean = part + lanes * C;
  Acc* red = mean + C;
  const Acc* __restrict__ d = static_cast<const Acc*>(a.d) + n * P * C;
  for (int64_t e = threadIdx.x; e < lanes * C; e += kThreads) {  // consecutive threads: consecutive channels
    const int64_t lane = e / C, c = e % C;
    Acc sum = Acc(0);
    for (int64_t p = lane; p < P; p += lanes) sum += d[p * C + c];
    part[e] = sum;
  }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += kThreads) {
    Acc sum = Acc(0);
    for (int64_t lane = 0; lane < lanes; ++lane) sum += part[lane * C + c];
    mean[c] = sum / static_cast<Acc>(P);
  }
  __syncthreads();
  const Acc* __restrict__ rw = static_cast<const Acc*>(a.se_rw);
  const Acc* __restrict__ rb = static_cast<const Acc*>(a.se_rb);
  for (int64_t j = threadIdx.x; j < S; j += kThreads) {
    Acc z = rb[j];
    for (int64_t c = 0; c < C; ++c) z += rw[j * C + c] * mean[c];
    red[j] = act_apply(a.se_act, z);
  }
  __syncthreads();
  const Acc* __restrict__ ew = static_cast<const Acc*>(a.se_ew);
  const Acc* __restrict__ eb = static_cast<const Acc*>(a.se_eb);
  Acc* __restrict__ s = static_cast<Acc*>(a.s) + n * C;
  for (int64_t c = threadIdx.x; c < C; c += kThreads) {
    Acc z = eb[c];
    for (int64_t j = 0; j < S; ++j) z += ew[c * S + j] * red[j];
    s[c] = gate_apply(a.gate, z);
  }
}

template <typename T>
cudaError_t launch_se_gate(const MBConvArgs& a, const rt::DeviceInfo& dev, cudaStream_t stream) {
  const int64_t bytes = se_smem_elems(a.ir.hidden, a.squeeze) * static_cast<int64_t>(sizeof(acc_t<T>));
  if (bytes > dev.smem_optin || a.ir.N > 0x7fffffff) return cudaErrorInvalidConfiguration;
  auto* kernel = &se_gate_kernel<acc_t<T>>;
  const cudaError_t err = rt::allow_smem(kernel, bytes);
  if (err != cudaSuccess) return err;
  CNNKERNELS_LAUNCH(kernel, dim3(static_cast<unsigned>(a.ir.N)), dim3(kThreads), static_cast<size_t>(bytes), stream,
                    a);
  return rt::last_error();
}

// ---- 3. projection --------------------------------------------------------------------------------------------------
// A[r][c] = d[m, c] * scale[n, c] for output pixel m of image n: the SE-scaled depthwise output, read in the
// accumulation type (x, ldx) and rounded once into the tile's type.
template <typename T>
struct GatedProducer {
  static constexpr int bk = chunk_k(sizeof(T));
  const ConvGemmArgs& a;
  const RowInfo* rows;

  static CNNKERNELS_HD int64_t gemm_k(const ConvGemmArgs& a) { return a.Cg; }

  __device__ __forceinline__ void produce(int /*group*/, int64_t k0, T* dst, int ldd) const {
    using Acc = acc_t<T>;
    const Acc* __restrict__ d = static_cast<const Acc*>(a.x);
    const Acc* __restrict__ scale = static_cast<const Acc*>(a.scale);
    for (int e = threadIdx.x; e < kBM * bk; e += kThreads) {
      const int r = e / bk, kk = e % bk;
      const int64_t c = k0 + kk;
      const RowInfo ri = rows[r];
      const Acc v = (ri.m >= 0 && c < a.Cg) ? d[ri.m * a.ldx + c] * scale[ri.n * a.Cg + c] : Acc(0);
      dst[r * ldd + kk] = from_acc<T>(v);
    }
  }
};

ConvGemmArgs projection_args(const MBConvArgs& a) {
  const InvResArgs& ir = a.ir;
  ConvGemmArgs p;
  p.x = a.d;
  p.N = ir.N; p.H = ir.Ho; p.W = ir.Wo; p.ldx = ir.hidden; p.Ho = ir.Ho; p.Wo = ir.Wo;
  p.Cg = ir.hidden;
  p.Cog = ir.Cout;
  p.w = ir.pw;
  p.bias = ir.pb;
  p.res = ir.residual ? ir.x : nullptr;  // stride 1 and Cout == C: output pixel m is input pixel m
  p.ldr = ir.C;
  p.scale = a.s;
  p.out[0] = OutSlice{ir.y, ir.Cout, ir.Cout};
  return p;
}

template <typename T>
cudaError_t launch_mbconv_t(const MBConvArgs& a, cudaStream_t stream) {
  if (a.ir.N * a.ir.Ho * a.ir.Wo == 0 || a.ir.Cout == 0) return cudaSuccess;
  rt::DeviceInfo dev{};
  cudaError_t err = rt::device_info(dev);
  if (err == cudaSuccess) err = launch_mbconv_depthwise<T>(a.ir, a.d, dev, stream);
  if (err == cudaSuccess) err = launch_se_gate<T>(a, dev, stream);
  if (err == cudaSuccess) err = launch_conv_gemm_t<T, GatedProducer<T>>(projection_args(a), stream);
  return err;
}

}  // namespace

cudaError_t launch_mbconv(DType t, const MBConvArgs& a, cudaStream_t stream) {
  if (a.squeeze == 0) return launch_inverted_residual(t, a.ir, stream);
  return dispatch_dtype(t, [&](auto tag) { return launch_mbconv_t<decltype(tag)>(a, stream); });
}

}  // namespace cnnkernels::cuda
