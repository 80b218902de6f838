// conv2d_act on CUDA: an implicit GEMM (rows = output pixels, columns = output channels of a group, K = kH*kW*Cg) whose
// A tile is gathered from the NHWC input per K chunk (im2col never exists in memory) and whose epilogue adds the bias
// and the residual and applies the activation while the tile is still on chip. Depthwise convolutions (groups == C ==
// C_out) have their own kernels instead (as a GEMM they would have one useful column in 64): a tiled one that stages
// each tile's input halo in shared memory (depthwise_tile.cuh, plan_depthwise), and a direct one, one thread per
// output, for the windows a halo does not pay for or fit.
// The gather launcher also serves inception_block's 1x1 and KxK convs (through OutSlice).
#include "cuda/block_gemm.cuh"
#include "cuda/depthwise_tile.cuh"

namespace cnnkernels::cuda {

namespace {

// A[r][k] = x[n, oh*s - p + kh*d, ow*s - p + kw*d, g*Cg + c] with (kh, kw, c) = split_k(k), zero in the padding: a
// plain copy, so it is issued as asynchronous copies (kAsyncCopy) of up to 16 bytes. The index math is hoisted: per
// row once per block into shared memory (GatherRow), per column once per K chunk in each thread, which keeps the same
// column for all its rows (kThreads is a multiple of the vectors per row); no division per element.
template <typename T>
struct GatherProducer {
  static constexpr int bk = chunk_k(sizeof(T));
  static constexpr bool kAsyncCopy = true;
  static constexpr int64_t kScratch = kBM * static_cast<int64_t>(sizeof(GatherRow));
  const ConvGemmArgs& a;
  const RowInfo* rows;
  const GatherRow* table = nullptr;
  int lv = 0;  // log2 of the elements per copy: Cg, ldx and x all allow it (copy_width_log2)

  static CNNKERNELS_HD int64_t gemm_k(const ConvGemmArgs& a) { return static_cast<int64_t>(a.kH) * a.kW * a.Cg; }

  // Reads rows[], which the caller has synchronised; the caller synchronises again before the first produce().
  __device__ __forceinline__ void prepare(unsigned char* scratch) {
    GatherRow* t = reinterpret_cast<GatherRow*>(scratch);
    for (int r = threadIdx.x; r < kBM; r += kThreads)
      t[r] = gather_row(rows[r], a.H, a.W, a.ldx, a.sH, a.sW, a.pH, a.pW);
    table = t;
    lv = copy_width_log2<T>(a.x, a.ldx, a.Cg);
  }

  __device__ __forceinline__ void produce(int g, int64_t k0, T* dst, int ldd) const {
    const T* __restrict__ x = static_cast<const T*>(a.x);
    const int lnv = ilog2(bk) - lv;  // log2 of the copies per row; a power of two dividing kThreads
    const int kv = static_cast<int>(threadIdx.x) & ((1 << lnv) - 1);
    const int64_t k = k0 + (kv << lv);  // the copy's columns divide Cg: same (kh, kw), all inside K or all outside
    const bool k_in = k < gemm_k(a);
    const GatherCol col = k_in ? gather_col(static_cast<int>(k), static_cast<int>(a.Cg), a.kW, a.dH, a.dW, a.W, a.ldx,
                                            static_cast<int64_t>(g) * a.Cg)
                               : GatherCol{0, 0, 0};
    for (int r = static_cast<int>(threadIdx.x) >> lnv; r < kBM; r += kThreads >> lnv) {
      const GatherRow row = table[r];
      const bool ok = k_in && gather_inside(row, col, a.H, a.W);
      copy_elems<T>(dst + r * ldd + (kv << lv), x + (ok ? static_cast<int64_t>(row.base + col.delta) : 0), ok, lv);
    }
  }
};

// One thread per output element (channel fastest: the warp's loads and stores are contiguous).
template <typename T>
__global__ void __launch_bounds__(kThreads) depthwise_kernel(ConvGemmArgs a) {
  using Acc = acc_t<T>;
  const T* __restrict__ res = static_cast<const T*>(a.res);
  T* __restrict__ y = static_cast<T*>(a.out[0].data);
  const int64_t C = a.Cg, total = a.N * a.Ho * a.Wo * C;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const int64_t m = i / C, c = i - m * C;
    const PixelPos p = split_pixel(m, a.Ho, a.Wo);
    Acc s = depthwise_at<T>(a, p.n, p.h, p.w, c);
    if (res) s += to_acc(res[m * a.ldr + c]);
    y[m * a.out[0].ld + c] = from_acc<T>(act_apply(a.act, s));
  }
}

// A th x tw tile of outputs per block, channels in chunks of p.cc: the halo of the chunk is staged once, then thread
// t computes channel t % p.cc of tile pixels t / p.cc, + kThreads / p.cc, ... from it (plan_depthwise).
template <typename T>
__global__ void __launch_bounds__(kThreads) depthwise_tile_kernel(ConvGemmArgs a, DepthwisePlan p) {
  using Acc = acc_t<T>;
  Acc* halo = reinterpret_cast<Acc*>(dyn_smem());
  const T* __restrict__ res = static_cast<const T*>(a.res);
  T* __restrict__ y = static_cast<T*>(a.out[0].data);
  const TileOrigin o = tile_origin(blockIdx.x, p.th, p.tw, a.Ho, a.Wo);
  const Halo h = tile_halo(a, o, p.th, p.tw);
  const int groups = kThreads / p.cc, j = threadIdx.x % p.cc, g = threadIdx.x / p.cc, np = p.th * p.tw;
  for (int64_t c0 = static_cast<int64_t>(blockIdx.y) * p.cc; c0 < a.Cg; c0 += static_cast<int64_t>(gridDim.y) * p.cc) {
    __syncthreads();  // the previous chunk's reads of the halo are done
    load_halo<T>(halo, p.cc, a, o.n, h, c0, p.cc);
    __syncthreads();
    const int64_t c = c0 + j;
    if (c >= a.Cg) continue;
    Acc acc[kDwPix];
    depthwise_tile_pixels<kDwPix>(acc, halo, p.cc, h, a, p.tw, j, c, g, groups, np);
#pragma unroll
    for (int i = 0; i < kDwPix; ++i) {
      const int q = g + i * groups;
      const int64_t oh = o.oh0 + q / p.tw, ow = o.ow0 + q % p.tw;
      if (q >= np || oh >= a.Ho || ow >= a.Wo) continue;
      const int64_t m = (o.n * a.Ho + oh) * a.Wo + ow;
      Acc s = acc[i];
      if (res) s += to_acc(res[m * a.ldr + c]);
      y[m * a.out[0].ld + c] = from_acc<T>(act_apply(a.act, s));
    }
  }
}

template <typename T>
cudaError_t launch_depthwise_t(const ConvGemmArgs& a, cudaStream_t stream) {
  const int64_t total = a.N * a.Ho * a.Wo * a.Cg;
  if (total == 0) return cudaSuccess;
  rt::DeviceInfo dev{};
  cudaError_t err = rt::device_info(dev);
  if (err != cudaSuccess) return err;
  const DepthwisePlan p = plan_depthwise(a.N, a.Ho, a.Wo, a.Cg, a.kH, a.kW, a.sH, a.sW, a.dH, a.dW, sizeof(acc_t<T>),
                                         dev.smem_optin);
  if (p.ok) {
    auto* kernel = &depthwise_tile_kernel<T>;
    err = rt::allow_smem(kernel, p.bytes);
    if (err != cudaSuccess) return err;
    CNNKERNELS_LAUNCH(kernel, dim3(static_cast<unsigned>(p.grid_x), static_cast<unsigned>(p.grid_y)), dim3(kThreads),
                      static_cast<size_t>(p.bytes), stream, a, p);
    return rt::last_error();
  }
  const int64_t blocks = ceil_div(total, kThreads), cap = static_cast<int64_t>(dev.sms) * 16;
  auto* kernel = &depthwise_kernel<T>;
  CNNKERNELS_LAUNCH(kernel, dim3(static_cast<unsigned>(blocks < cap ? blocks : cap)), dim3(kThreads), 0, stream, a);
  return rt::last_error();
}

}  // namespace

cudaError_t launch_conv_gemm(DType t, const ConvGemmArgs& a, cudaStream_t stream) {
  return launch_for<GatherProducer>(t, a, stream);
}

cudaError_t launch_depthwise(DType t, const ConvGemmArgs& a, cudaStream_t stream) {
  return dispatch_dtype(t, [&](auto tag) { return launch_depthwise_t<decltype(tag)>(a, stream); });
}

}  // namespace cnnkernels::cuda
