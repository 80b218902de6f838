// inception_block on CUDA: branch 4 (3x3 max pool, stride 1, padding 1, then 1x1 conv + ReLU) as one kernel whose A
// tile is the pooled input, computed per tile in shared memory. The other branches run through launch_conv_gemm
// (conv2d_act_kernel.cu): one GEMM for the three 1x1 convs that read the input (branch 1 into its output slice, the two
// reductions into scratch), then the two KxK convs from the scratch into their slices. Every kernel writes its channel
// slice of the NHWC output directly (OutSlice), so there is no concatenation.
#include "cuda/block_gemm.cuh"

namespace cnnkernels::cuda {

namespace {

// A[r][c] = max over the 3x3 window (inside the image) of x[n, oh + dh, ow + dw, c]; NaN-propagating like max_pool2d.
template <typename T>
struct PoolProducer {
  static constexpr int bk = chunk_k(sizeof(T));
  const ConvGemmArgs& a;
  const RowInfo* rows;

  static CNNKERNELS_HD int64_t gemm_k(const ConvGemmArgs& a) { return a.Cg; }

  __device__ __forceinline__ void produce(int /*group*/, int64_t k0, T* dst, int ldd) const {
    using Acc = acc_t<T>;
    const T* __restrict__ x = static_cast<const T*>(a.x);
    const int64_t C = a.Cg;
    const T zero = zero_of<T>();
    for (int e = threadIdx.x; e < kBM * bk; e += kThreads) {
      const int r = e / bk, kk = e % bk;
      const int64_t c = k0 + kk;
      T v = zero;
      const RowInfo ri = rows[r];
      if (ri.m >= 0 && c < C) {
        const Range rh = clamp_range(halo_origin(ri.h, 1, 1), 3, a.H);
        const Range rw = clamp_range(halo_origin(ri.w, 1, 1), 3, a.W);
        Acc mx = to_acc(x[nhwc_offset(ri.n, ri.h, ri.w, c, a.H, a.W, a.ldx)]);  // the centre is always inside
        for (int64_t ih = rh.lo; ih < rh.hi; ++ih)
          for (int64_t iw = rw.lo; iw < rw.hi; ++iw)
            mx = max_nan(mx, to_acc(x[nhwc_offset(ri.n, ih, iw, c, a.H, a.W, a.ldx)]));
        v = from_acc<T>(mx);
      }
      dst[r * ldd + kk] = v;
    }
  }
};

}  // namespace

cudaError_t launch_pool_conv(DType t, const ConvGemmArgs& a, cudaStream_t stream) {
  return launch_for<PoolProducer>(t, a, stream);
}

}  // namespace cnnkernels::cuda
