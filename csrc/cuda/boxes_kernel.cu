// box_iou and the nms suppression mask on CUDA, with the results of the CPU kernels (csrc/cpu/boxes.cpp) and so of
// torchvision.ops, bit for bit: every IoU repeats their operations in their order and type.
//
// This file is compiled with -fmad=false (CMakeLists.txt): nvcc would otherwise fuse `area_a + area_b - inter` or the
// area products into fused multiply-adds, which round once instead of twice and change IoUs in their last bit.
#include <limits>

#include "cuda/device_math.h"
#include "cuda/kernels.h"
#include "cuda/types.cuh"

namespace cnnkernels::cuda {

namespace {

constexpr int kIouTileX = 32;  // threads of a block along boxes2 (consecutive outputs)
constexpr int kIouTileY = 8;   // along boxes1
constexpr int64_t kMaxGridY = 65535;

// std::min / std::max, as the CPU kernels call them (the same operand returned on ties and for NaN).
template <typename A>
__device__ __forceinline__ A min_of(A a, A b) { return b < a ? b : a; }
template <typename A>
__device__ __forceinline__ A max_of(A a, A b) { return a < b ? b : a; }

// One thread per (i, j); grid-stride in both dimensions, so any N and M fit the grid limits.
template <typename T>
__global__ void __launch_bounds__(kIouTileX * kIouTileY)
    box_iou_kernel(const T* __restrict__ a, const T* __restrict__ b, acc_t<T>* __restrict__ out, int64_t N,
                   int64_t M) {
  using A = acc_t<T>;
  const A nan = std::numeric_limits<A>::quiet_NaN();
  for (int64_t i = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; i < N;
       i += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    const T* p = a + 4 * i;
    const A ax1 = to_acc(p[0]), ay1 = to_acc(p[1]), ax2 = to_acc(p[2]), ay2 = to_acc(p[3]);
    const bool a_nan = ax1 != ax1 || ay1 != ay1 || ax2 != ax2 || ay2 != ay2;
    const A area_a = (ax2 - ax1) * (ay2 - ay1);
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < M;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const T* q = b + 4 * j;
      const A bx1 = to_acc(q[0]), by1 = to_acc(q[1]), bx2 = to_acc(q[2]), by2 = to_acc(q[3]);
      A iou = nan;
      // torch.maximum / minimum / clamp propagate NaN, so a NaN coordinate gives a NaN IoU (the CPU kernel's rule).
      if (!a_nan && bx1 == bx1 && by1 == by1 && bx2 == bx2 && by2 == by2) {
        // The corner differences round to the box dtype (torchvision subtracts 16-bit boxes in 16 bits).
        const A dx = to_acc(from_acc<T>(min_of(ax2, bx2) - max_of(ax1, bx1)));
        const A dy = to_acc(from_acc<T>(min_of(ay2, by2) - max_of(ay1, by1)));
        const A w = dx > A(0) ? dx : A(0), h = dy > A(0) ? dy : A(0);
        const A inter = w * h;
        const A area_b = (bx2 - bx1) * (by2 - by1);
        iou = inter / (area_a + area_b - inter);
      }
      out[i * M + j] = iou;
    }
  }
}

template <typename T>
cudaError_t launch_box_iou_t(const void* a, const void* b, void* out, int64_t N, int64_t M, cudaStream_t stream) {
  const int64_t gx = ceil_div(M, kIouTileX), gy = ceil_div(N, kIouTileY);
  const dim3 grid(static_cast<unsigned>(gx < (int64_t{1} << 30) ? gx : (int64_t{1} << 30)),
                  static_cast<unsigned>(gy < kMaxGridY ? gy : kMaxGridY));
  auto* kernel = &box_iou_kernel<T>;
  CNNKERNELS_LAUNCH(kernel, grid, dim3(kIouTileX, kIouTileY), 0, stream, static_cast<const T*>(a),
                    static_cast<const T*>(b), static_cast<acc_t<T>*>(out), N, M);
  return rt::last_error();
}

// Block (column block cb, row block rb) of the mask: thread t compares box i = 64 rb + t with the boxes
// j = 64 cb + k it outranks (j > i), bit k of mask[i][cb] set when their IoU > thr. Blocks below the diagonal write
// nothing: the reduction never reads them. The IoU is the CPU nms kernel's (csrc/cpu/boxes.cpp `suppress`), compared
// in float64 as torchvision compares it.
template <typename T>
__global__ void __launch_bounds__(kNmsBlock)
    nms_mask_kernel(const T* __restrict__ boxes, int64_t n, double thr, uint64_t* __restrict__ mask, int64_t words,
                    int64_t row_block0) {
  const int64_t rb = row_block0 + blockIdx.y, cb = blockIdx.x;
  if (cb < rb) return;
  T* col = reinterpret_cast<T*>(dyn_smem());  // [5][kNmsBlock]: x1, y1, x2, y2, area of the column block
  const int64_t c0 = cb * kNmsBlock;
  const int cn = static_cast<int>(n - c0 < kNmsBlock ? n - c0 : kNmsBlock);
  const int t = static_cast<int>(threadIdx.x);
  if (t < cn) {
    const T* q = boxes + 4 * (c0 + t);
    col[t] = q[0];
    col[kNmsBlock + t] = q[1];
    col[2 * kNmsBlock + t] = q[2];
    col[3 * kNmsBlock + t] = q[3];
    col[4 * kNmsBlock + t] = (q[2] - q[0]) * (q[3] - q[1]);
  }
  __syncthreads();
  const int64_t i = rb * kNmsBlock + t;
  if (i >= n) return;
  const T* p = boxes + 4 * i;
  const T ix1 = p[0], iy1 = p[1], ix2 = p[2], iy2 = p[3];
  const T ia = (ix2 - ix1) * (iy2 - iy1);
  uint64_t bits = 0;
  for (int k = cb == rb ? t + 1 : 0; k < cn; ++k) {
    const T xx1 = max_of(ix1, col[k]), yy1 = max_of(iy1, col[kNmsBlock + k]);
    const T xx2 = min_of(ix2, col[2 * kNmsBlock + k]), yy2 = min_of(iy2, col[3 * kNmsBlock + k]);
    const T w = max_of(T(0), xx2 - xx1), h = max_of(T(0), yy2 - yy1);
    const T inter = w * h;
    const T ovr = inter / (ia + col[4 * kNmsBlock + k] - inter);
    if (static_cast<double>(ovr) > thr) bits |= uint64_t{1} << k;
  }
  mask[i * words + cb] = bits;
}

template <typename T>
cudaError_t launch_nms_mask_t(const void* boxes, int64_t n, double thr, void* mask, cudaStream_t stream) {
  const int64_t blocks = ceil_div(n, kNmsBlock);
  auto* kernel = &nms_mask_kernel<T>;
  // grid.y is limited to 65535: row blocks beyond it go in further launches.
  for (int64_t rb0 = 0; rb0 < blocks; rb0 += kMaxGridY) {
    const int64_t rows = blocks - rb0 < kMaxGridY ? blocks - rb0 : kMaxGridY;
    CNNKERNELS_LAUNCH(kernel, dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(rows)), dim3(kNmsBlock),
                      5 * kNmsBlock * sizeof(T), stream, static_cast<const T*>(boxes), n, thr,
                      static_cast<uint64_t*>(mask), blocks, rb0);
    const cudaError_t e = rt::last_error();
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_box_iou(DType t, const void* boxes1, const void* boxes2, void* out, int64_t N, int64_t M,
                           cudaStream_t stream) {
  if (N == 0 || M == 0) return cudaSuccess;
  return dispatch_dtype(t, [&](auto tag) {
    return launch_box_iou_t<decltype(tag)>(boxes1, boxes2, out, N, M, stream);
  });
}

cudaError_t launch_nms_mask(DType t, const void* boxes, int64_t n, double iou_threshold, void* mask,
                            cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  switch (t) {
    case DType::F32: return launch_nms_mask_t<float>(boxes, n, iou_threshold, mask, stream);
    case DType::F64: return launch_nms_mask_t<double>(boxes, n, iou_threshold, mask, stream);
    default: return cudaErrorInvalidValue;  // the wrapper runs 16-bit boxes in float32
  }
}

}  // namespace cnnkernels::cuda
