#pragma once
// The block-level machinery shared by the GEMM-shaped kernels (conv2d_act, dwsep_conv2d, inception_block,
// inverted_residual, mbconv): a 64 x BN accumulator tile of 256 threads (tensor cores through WMMA for fp16/bf16, a
// CUDA-core register tile for fp32/fp64), the loop that feeds it from a producer of A and the packed weight, and the
// fused epilogue. A producer fills one K chunk of A [64 rows][bk] in shared memory; what it computes (an im2col gather,
// a max pool, a depthwise conv, an expansion + depthwise, an SE-scaled load) is what makes each op's kernel.
#include "cuda/compat.cuh"
#include "cuda/device_math.h"
#include "cuda/kernels.h"
#include "cuda/tiling.h"
#include "cuda/types.cuh"

namespace cnnkernels::cuda {

// ---- the accumulator tile -----------------------------------------------------------------------------------------
// C[64][BN] += A[64][kc] * B[kc][BN], A and B in shared memory (row-major, leading dimensions lda / ldb). All 256
// threads call every member. epilogue(stage, ldc, f) calls f(row, col, value) once per element.
template <typename T, int BN, bool TC = Traits<T>::tc>
struct TileGemm;

// CUDA cores: thread (ty, tx) = (tid / 16, tid % 16) owns rows ty + 16 i and columns tx + 16 j, so a warp reads two
// A values (broadcast) and 16 consecutive B values per k, and stores 16 consecutive channels in the epilogue.
template <typename T, int BN>
struct TileGemm<T, BN, false> {
  using Acc = acc_t<T>;
  static constexpr int NR = BN / 16;
  static_assert(BN % 16 == 0, "tile width must be a multiple of 16");
  Acc acc[4][NR];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < NR; ++j) acc[i][j] = Acc(0);
  }

  __device__ __forceinline__ void mma(const T* A, int lda, const T* B, int ldb, int kc) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    for (int k = 0; k < kc; ++k) {
      Acc a[4], b[NR];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = to_acc(A[(ty + 16 * i) * lda + k]);
#pragma unroll
      for (int j = 0; j < NR; ++j) b[j] = to_acc(B[k * ldb + tx + 16 * j]);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
    }
  }

  template <class F>
  __device__ __forceinline__ void epilogue(float* /*stage: unused*/, int /*ldc*/, F&& f) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < NR; ++j) f(ty + 16 * i, tx + 16 * j, acc[i][j]);
  }
};

// Tensor cores (WMMA 16x16x16, fp32 accumulation): warp w owns row fragment w % 4 and BN / 32 column fragments from
// (w / 4) * BN / 32. The epilogue stages the fragments through fp32 shared memory, then walks the tile channel-fastest
// so that stores are coalesced.
template <typename T, int BN>
struct TileGemm<T, BN, true> {
  static constexpr int FN = BN / 32;
  static_assert(BN % 32 == 0, "tensor-core tile width must be a multiple of 32");
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc[FN];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int f = 0; f < FN; ++f) nvcuda::wmma::fill_fragment(acc[f], 0.0f);
  }

  __device__ __forceinline__ void mma(const T* A, int lda, const T* B, int ldb, int kc) {
    using namespace nvcuda;
    const int warp = threadIdx.x / 32, wm = warp % 4, wn = (warp / 4) * FN;
    for (int k = 0; k < kc; k += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
      wmma::load_matrix_sync(a, A + wm * 16 * lda + k, lda);
#pragma unroll
      for (int f = 0; f < FN; ++f) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(b, B + k * ldb + (wn + f) * 16, ldb);
        wmma::mma_sync(acc[f], a, b, acc[f]);
      }
    }
  }

  template <class F>
  __device__ __forceinline__ void epilogue(float* stage, int ldc, F&& f) {
    using namespace nvcuda;
    const int warp = threadIdx.x / 32, wm = warp % 4, wn = (warp / 4) * FN;
#pragma unroll
    for (int i = 0; i < FN; ++i)
      wmma::store_matrix_sync(stage + wm * 16 * ldc + (wn + i) * 16, acc[i], ldc, wmma::mem_row_major);
    __syncthreads();
    for (int e = threadIdx.x; e < kBM * BN; e += kThreads) {
      const int r = e / BN, c = e % BN;
      f(r, c, stage[r * ldc + c]);
    }
    __syncthreads();
  }
};

// ---- pieces of a block ------------------------------------------------------------------------------------------------
// Rows of a block over consecutive output pixels m0 .. m0 + 63 (flattened N*Ho*Wo).
__device__ __forceinline__ void rows_flat(RowInfo* rows, int64_t m0, int64_t M, int64_t Ho, int64_t Wo) {
  for (int r = threadIdx.x; r < kBM; r += kThreads) {
    const int64_t m = m0 + r;
    if (m < M) {
      const PixelPos p = split_pixel(m, Ho, Wo);
      rows[r] = RowInfo{m, p.n, p.h, p.w};
    } else {
      rows[r] = RowInfo{-1, 0, 0, 0};
    }
  }
}

// B chunk: rows k0 .. k0 + bk of group g of the packed weight [groups][K][Cog], columns n0 .. n0 + kBN; zero outside.
template <typename T>
__device__ __forceinline__ void load_b(const T* __restrict__ w, int64_t K, int64_t Cog, int g, int64_t k0,
                                       int64_t n0, T* B, int ldb, int bk) {
  const T zero = zero_of<T>();
  for (int e = threadIdx.x; e < bk * kBN; e += kThreads) {
    const int kk = e / kBN, j = e % kBN;
    const int64_t k = k0 + kk, col = n0 + j;
    B[kk * ldb + j] = (k < K && col < Cog) ? w[(static_cast<int64_t>(g) * K + k) * Cog + col] : zero;
  }
}

// The block's walk over its column tiles (blockIdx.y, + gridDim.y, ...) of `groups` x ceil(Cog / kBN):
//   resident: A for the whole K of the current group is produced once into shared memory and reused;
//   otherwise: A is produced chunk by chunk, again for every column tile.
// Producer: `void produce(int group, int64_t k0, T* dst, int ldd)`, all threads, fills dst[64][bk] (zeros beyond K and
// for rows outside the output); it may synchronise internally. Epi: `void operator()(int group, int64_t n0, int row,
// int col, Acc value)`.
template <typename T, class Producer, class Epi>
__device__ __forceinline__ void gemm_tiles(Producer& prod, const T* __restrict__ w, int64_t K, int groups, int64_t Cog,
                                           unsigned char* smem, const SmemPlan& sp, bool resident, const Epi& epi) {
  T* A = reinterpret_cast<T*>(smem + sp.a);
  T* B = reinterpret_cast<T*>(smem + sp.b);
  float* C = reinterpret_cast<float*>(smem + sp.c);
  constexpr int bk = chunk_k(sizeof(T));
  const int64_t n_ct = ceil_div(Cog, kBN);
  const int64_t tiles = static_cast<int64_t>(groups) * n_ct;
  int a_group = -1;
  for (int64_t ct = blockIdx.y; ct < tiles; ct += gridDim.y) {
    const int g = static_cast<int>(ct / n_ct);
    const int64_t n0 = (ct % n_ct) * kBN;
    if (resident && g != a_group) {
      for (int64_t k0 = 0; k0 < K; k0 += bk) prod.produce(g, k0, A + k0, sp.lda);
      a_group = g;
      __syncthreads();
    }
    TileGemm<T, kBN> tile;
    tile.zero();
    for (int64_t k0 = 0; k0 < K; k0 += bk) {
      if (!resident) prod.produce(g, k0, A, sp.lda);
      load_b(w, K, Cog, g, k0, n0, B, sp.ldb, bk);
      __syncthreads();
      tile.mma(resident ? A + k0 : A, sp.lda, B, sp.ldb, bk);
      __syncthreads();
    }
    tile.epilogue(C, sp.ldc, [&](int r, int c, auto v) { epi(g, n0, r, c, v); });
    __syncthreads();
  }
}

// dw_b[c] + sum over the window of x[n, h*s - p + kh*d, w*s - p + kw*d, c] * dw_w[kh*kW + kw][c]: the depthwise conv
// (geometry and weights of `a`, zero padding) at output pixel (n, h, w), channel c.
template <typename T>
__device__ __forceinline__ acc_t<T> depthwise_at(const ConvGemmArgs& a, int64_t n, int h, int w, int64_t c) {
  using Acc = acc_t<T>;
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const Acc* __restrict__ wt = static_cast<const Acc*>(a.dw_w);
  Acc s = a.dw_b ? static_cast<const Acc*>(a.dw_b)[c] : Acc(0);
  const int64_t ih0 = halo_origin(h, a.sH, a.pH), iw0 = halo_origin(w, a.sW, a.pW);
  for (int kh = 0; kh < a.kH; ++kh) {
    const int64_t ih = ih0 + static_cast<int64_t>(kh) * a.dH;
    if (ih < 0 || ih >= a.H) continue;
    for (int kw = 0; kw < a.kW; ++kw) {
      const int64_t iw = iw0 + static_cast<int64_t>(kw) * a.dW;
      if (iw < 0 || iw >= a.W) continue;
      s += to_acc(x[nhwc_offset(n, ih, iw, c, a.H, a.W, a.ldx)]) * wt[(kh * a.kW + kw) * a.Cg + c];
    }
  }
  return s;
}

// The conv epilogue: + bias, + residual, activation, routed to the output slice that holds the channel.
template <typename T>
struct ConvEpilogue {
  const ConvGemmArgs& a;
  const RowInfo* rows;

  __device__ __forceinline__ void operator()(int g, int64_t n0, int r, int c, acc_t<T> v) const {
    using Acc = acc_t<T>;
    const int64_t m = rows[r].m;
    const int64_t j = n0 + c;
    if (m < 0 || j >= a.Cog) return;
    const int64_t oc = g * a.Cog + j;
    Acc s = v;
    if (a.bias) s += static_cast<const Acc*>(a.bias)[oc];
    if (a.res) s += to_acc(static_cast<const T*>(a.res)[m * a.ldr + oc]);
    s = act_apply(a.act, s);
    int64_t begin = 0;
#pragma unroll
    for (int i = 0; i < 3; ++i) {  // static indices: the slices stay in the kernel's parameter space
      if (i < a.nslices && oc < a.out[i].end) {
        static_cast<T*>(a.out[i].data)[m * a.out[i].ld + (oc - begin)] = from_acc<T>(s);
        return;
      }
      begin = a.out[i].end;
    }
  }
};

// A conv-shaped kernel: flattened pixel tiles, a producer built from (args, rows), the conv epilogue.
template <typename T, class Producer>
__global__ void __launch_bounds__(kThreads) conv_gemm_kernel(ConvGemmArgs a, SmemPlan sp, bool resident) {
  unsigned char* smem = dyn_smem();
  RowInfo* rows = reinterpret_cast<RowInfo*>(smem + sp.rows);
  rows_flat(rows, static_cast<int64_t>(blockIdx.x) * kBM, a.N * a.Ho * a.Wo, a.Ho, a.Wo);
  __syncthreads();
  Producer prod{a, rows};
  gemm_tiles<T>(prod, static_cast<const T*>(a.w), Producer::gemm_k(a), a.groups, a.Cog, smem, sp, resident,
                ConvEpilogue<T>{a, rows});
}

template <typename T, class Producer>
cudaError_t launch_conv_gemm_t(const ConvGemmArgs& a, cudaStream_t stream) {
  const int64_t M = a.N * a.Ho * a.Wo;
  if (M == 0 || a.groups * a.Cog == 0) return cudaSuccess;
  rt::DeviceInfo dev{};
  cudaError_t err = rt::device_info(dev);
  if (err != cudaSuccess) return err;
  const LaunchPlan p = plan_gemm(ceil_div(M, kBM), a.groups * ceil_div(a.Cog, kBN), Producer::gemm_k(a), sizeof(T),
                                 sizeof(acc_t<T>), dev.sms, dev.smem_optin, 0, false);
  if (!p.ok) return cudaErrorInvalidConfiguration;
  auto* kernel = &conv_gemm_kernel<T, Producer>;
  err = rt::allow_smem(kernel, p.smem.bytes);
  if (err != cudaSuccess) return err;
  CNNKERNELS_LAUNCH(kernel, dim3(static_cast<unsigned>(p.grid_x), static_cast<unsigned>(p.grid_y)), dim3(kThreads),
              static_cast<size_t>(p.smem.bytes), stream, a, p.smem, p.resident);
  return rt::last_error();
}

// One launcher per producer, dispatched on the dtype: `launch_for<GatherProducer>(t, args, stream)`.
template <template <typename> class Producer>
cudaError_t launch_for(DType t, const ConvGemmArgs& a, cudaStream_t stream) {
  return dispatch_dtype(t, [&](auto tag) {
    using T = decltype(tag);
    return launch_conv_gemm_t<T, Producer<T>>(a, stream);
  });
}

}  // namespace cnnkernels::cuda
