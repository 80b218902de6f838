#pragma once
// The block-level machinery shared by the GEMM-shaped kernels (conv2d_act, dwsep_conv2d, inception_block,
// inverted_residual, mbconv): a 64 x BN accumulator tile of 256 threads (tensor cores through WMMA for fp16/bf16, a
// CUDA-core register tile for fp32/fp64), the loop that feeds it from a producer of A and the packed weight, and the
// fused epilogue. A producer fills one K chunk of A [64 rows][bk] in shared memory; what it computes (an im2col gather,
// a max pool, a depthwise conv, an expansion + depthwise, an SE-scaled load) is what makes each op's kernel.
#include <type_traits>

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

// ---- pieces of a block ----------------------------------------------------------------------------------------------
// Rows of a block over consecutive output pixels m0 .. m0 + 63 (flattened N*Ho*Wo).
__device__ __forceinline__ void rows_flat(RowInfo* rows, int64_t m0, int64_t M, int64_t Ho, int64_t Wo) {
  for (int r = threadIdx.x; r < kBM; r += kThreads) rows[r] = row_info(m0 + r, M, Ho, Wo);
}

// ---- copies into shared memory --------------------------------------------------------------------------------------
// The copy width for runs of `len` elements starting `ld` elements apart from `base`: log2 of the most elements of T,
// at most 16 bytes, that base, ld and len are all multiples of. Block-uniform; the loops below take it at run time
// (shifts, one switch around the copy instruction) rather than as a template parameter: one loop body per call site
// keeps the kernels' register allocation at what a single width needs (a body per width raised it to 128 registers).
template <typename T>
__device__ __forceinline__ int copy_width_log2(const void* base, int64_t ld, int64_t len) {
  int lv = sizeof(T) == 2 ? 3 : sizeof(T) == 4 ? 2 : 1;
  for (; lv > 0; --lv) {
    const int v = 1 << lv;
    if (ld % v == 0 && len % v == 0 && reinterpret_cast<uintptr_t>(base) % (v * sizeof(T)) == 0) break;
  }
  return lv;
}

// 2**lv elements src -> dst (zeros when !valid): an asynchronous copy (cp.async takes 4, 8 or 16 bytes), a plain load
// and store for a single 2-byte element.
template <typename T>
__device__ __forceinline__ void copy_elems(T* dst, const T* src, bool valid, int lv) {
  switch (static_cast<int>(sizeof(T)) << lv) {
    case 16: async_copy<16>(dst, src, valid); break;
    case 8: async_copy<8>(dst, src, valid); break;
    case 4: async_copy<4>(dst, src, valid); break;
    default:
      if constexpr (sizeof(T) < 4) *dst = valid ? *src : zero_of<T>();
      break;
  }
}

// log2 of a power of two that is known at compile time for each width (the loops' divisions become shifts).
CNNKERNELS_HD constexpr int ilog2(int v) {
  int l = 0;
  while ((1 << l) < v) ++l;
  return l;
}

// B chunk: rows k0 .. k0 + bk of group g of the packed weight [groups][K][Cog], columns n0 .. n0 + kBN; zero outside.
// Issued as copies of 2**lv elements (Cog a multiple of them, see copy_width_log2); the caller commits and waits.
template <typename T>
__device__ __forceinline__ void load_b(const T* __restrict__ w, int64_t K, int64_t Cog, int g, int64_t k0, int64_t n0,
                                       T* B, int ldb, int lv) {
  constexpr int bk = chunk_k(sizeof(T)), lbn = ilog2(kBN);
  const int lnv = lbn - lv;  // log2 of the copies per row
  for (int e = threadIdx.x; e < (bk << lnv); e += kThreads) {
    const int kk = e >> lnv, j = (e & ((1 << lnv) - 1)) << lv;
    const int64_t k = k0 + kk, col = n0 + j;
    const bool ok = k < K && col < Cog;
    copy_elems<T>(B + kk * ldb + j, w + (ok ? (static_cast<int64_t>(g) * K + k) * Cog + col : 0), ok, lv);
  }
}

// What gemm_tiles needs to know of a producer besides produce(). A producer with kAsyncCopy = true fills its A chunk
// with copy_elems only (no computation, no barrier), so that chunk can be double-buffered and in flight while the
// previous one is multiplied; it keeps kScratch bytes of shared memory of its own (SmemPlan::p), set up by
// prepare(smem + sp.p) once per block before the first produce(). Producers that compute A have neither.
template <class P, class = void>
struct ProducerTraits {
  static constexpr bool async_copy = false;
  static constexpr int64_t scratch = 0;
};
template <class P>
struct ProducerTraits<P, std::void_t<decltype(P::kAsyncCopy)>> {
  static constexpr bool async_copy = P::kAsyncCopy;
  static constexpr int64_t scratch = P::kScratch;
};

// The block's walk over its column tiles (blockIdx.y, + gridDim.y, ...) of `groups` x ceil(Cog / kBN):
//   resident: A for the whole K of the current group is produced once into shared memory and reused;
//   otherwise: A is produced chunk by chunk, again for every column tile.
// With a second B buffer in the plan (sp.b2 != sp.b) the loop is pipelined: chunk k + 1's weight copies (and its A
// copies when A has a second buffer too, sp.a2 != sp.a) are issued before chunk k is multiplied, one barrier per chunk.
// A producer that computes A fills its single A buffer at the start of each step, while the next B chunk is in flight.
// Without second buffers each chunk is loaded, waited for and multiplied in turn.
// Producer: `void produce(int group, int64_t k0, T* dst, int ldd)`, all threads, fills dst[64][bk] (zeros beyond K and
// for rows outside the output) or issues the copies that do (kAsyncCopy); it may synchronise internally. Epi:
// `void operator()(int group, int64_t n0, int row, int col, Acc value)`.
template <typename T, class Producer, class Epi>
__device__ __forceinline__ void gemm_tiles(Producer& prod, const T* __restrict__ w, int64_t K, int groups, int64_t Cog,
                                           unsigned char* smem, const SmemPlan& sp, bool resident, const Epi& epi) {
  // Buffers are picked with selects, not an indexed array: a dynamically indexed local array would live on the stack.
  T* const A0 = reinterpret_cast<T*>(smem + sp.a);
  T* const A1 = reinterpret_cast<T*>(smem + sp.a2);
  T* const B0 = reinterpret_cast<T*>(smem + sp.b);
  T* const B1 = reinterpret_cast<T*>(smem + sp.b2);
  float* C = reinterpret_cast<float*>(smem + sp.c);
  constexpr int bk = chunk_k(sizeof(T));
  const bool pipelined = sp.b2 != sp.b;
  const bool a_double = sp.a2 != sp.a;           // plan_smem gives A a second buffer only with B's and never resident
  const bool a_each_step = !resident && !a_double;  // A produced into its single buffer at the start of each step
  const int b_lv = copy_width_log2<T>(w, Cog, Cog);
  const int64_t nk = ceil_div(K, bk);
  const int64_t n_ct = ceil_div(Cog, kBN);
  const int64_t tiles = static_cast<int64_t>(groups) * n_ct;
  int a_group = -1;
  for (int64_t ct = blockIdx.y; ct < tiles; ct += gridDim.y) {
    const int g = static_cast<int>(ct / n_ct);
    const int64_t n0 = (ct % n_ct) * kBN;
    if (resident && g != a_group) {  // copies land, and computed values become visible, at chunk 0's wait and barrier
      for (int64_t k0 = 0; k0 < K; k0 += bk) prod.produce(g, k0, A0 + k0, sp.lda);
      a_group = g;
    }
    // Chunk kc's copies into buffer kc % 2 (buffer 0 without a pipeline), as one commit group.
    const auto issue = [&](int64_t kc) {
      const bool second = pipelined && (kc & 1);
      if (a_double) prod.produce(g, kc * bk, second ? A1 : A0, sp.lda);
      load_b<T>(w, K, Cog, g, kc * bk, n0, second ? B1 : B0, sp.ldb, b_lv);
      async_commit();
    };
    TileGemm<T, kBN> tile;
    tile.zero();
    if (pipelined) {
      if (nk > 0) issue(0);
      for (int64_t kc = 0; kc < nk; ++kc) {
        if (a_each_step) {
          prod.produce(g, kc * bk, A0, sp.lda);
          async_commit();  // a copying producer's A chunk joins the groups that the wait below covers
        }
        async_wait<0>();
        __syncthreads();  // chunk kc is in shared memory for every thread, and every thread is done with chunk kc - 1
        if (kc + 1 < nk) issue(kc + 1);  // into chunk kc - 1's buffers, in flight during the multiply below
        const T* a_tile = resident ? A0 + kc * bk : (a_double && (kc & 1)) ? A1 : A0;
        tile.mma(a_tile, sp.lda, (kc & 1) ? B1 : B0, sp.ldb, bk);
        if (a_each_step) __syncthreads();  // the single A buffer is rewritten at the next step
      }
    } else {
      for (int64_t kc = 0; kc < nk; ++kc) {
        if (!resident) prod.produce(g, kc * bk, A0, sp.lda);
        issue(kc);
        async_wait<0>();
        __syncthreads();
        tile.mma(resident ? A0 + kc * bk : A0, sp.lda, B0, sp.ldb, bk);
        __syncthreads();
      }
    }
    tile.epilogue(C, sp.ldc, [&](int r, int c, auto v) { epi(g, n0, r, c, v); });
    __syncthreads();
  }
}

// dw_b[c] + sum over the window of x[n, h*s - p + kh*d, w*s - p + kw*d, c] * dw_w[kh*kW + kw][c]: the depthwise conv
// (geometry and weights of `a`, zero padding) at output pixel (n, h, w), channel c.
template <typename T>
__device__ __forceinline__ acc_t<T> depthwise_at(const ConvGemmArgs& a, int64_t n, int64_t h, int64_t w, int64_t c) {
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

// Blocks per SM the register allocation must allow: with no minimum, ptxas (CUDA 13) picked 64 or 80 registers for
// some instantiations and spilled to the stack (8-56 bytes) to get there. 3 blocks (at most 80 registers) hold every
// 2- and 4-byte instantiation without spilling; fp64's register tile (32 doubles of accumulators) needs 2 (at most
// 128 registers).
template <typename T>
constexpr int kMinBlocks = sizeof(T) == 8 ? 2 : 3;

// A conv-shaped kernel: flattened pixel tiles, a producer built from (args, rows), the conv epilogue.
template <typename T, class Producer>
__global__ void __launch_bounds__(kThreads, kMinBlocks<T>)
    conv_gemm_kernel(ConvGemmArgs a, SmemPlan sp, bool resident) {
  unsigned char* smem = dyn_smem();
  RowInfo* rows = reinterpret_cast<RowInfo*>(smem + sp.rows);
  rows_flat(rows, static_cast<int64_t>(blockIdx.x) * kBM, a.N * a.Ho * a.Wo, a.Ho, a.Wo);
  __syncthreads();
  Producer prod{a, rows};
  if constexpr (ProducerTraits<Producer>::async_copy) {
    prod.prepare(smem + sp.p);
    __syncthreads();
  }
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
                                 sizeof(acc_t<T>), dev.sms, dev.smem_optin, 0, false,
                                 ProducerTraits<Producer>::async_copy, ProducerTraits<Producer>::scratch,
                                 dev.async_copy);
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
