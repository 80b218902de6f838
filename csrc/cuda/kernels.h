#pragma once
// Launchers for the CUDA kernels. Deliberately free of torch headers: the .cu files include only this and the CUDA
// runtime, which keeps nvcc fast; the .cpp wrappers hold the torch side (checks, allocation, stream, device guard).
//
// Layouts: activations are NHWC (channels_last contiguous), a pixel's channels `ld` elements apart from the next
// pixel's (ld > channels for a slice of a wider tensor). GEMM weights are packed by the wrappers as
// [groups][kH][kW][Cg][Cog] (K-major, output channel fastest); depthwise weights as [kH * kW][C]; biases and depthwise
// weights are in the accumulation type (fp32, fp64 for fp64 tensors), everything else in the tensor dtype.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/device_math.h"

namespace cnnkernels::cuda {

enum class DType : int { F32 = 0, BF16 = 1, F16 = 2, F64 = 3 };

cudaError_t launch_add_relu(DType t, const void* a, const void* b, void* out, int64_t n, cudaStream_t stream);

// Output channels [previous slice's end, end) go to `data` (channel 0 of the slice), pixels `ld` elements apart.
// Lets one GEMM write several tensors (inception: branch 1 into the output, the reductions into scratch) or a channel
// slice of a wider output (inception branches, no concat).
struct OutSlice {
  void* data;
  int64_t ld;
  int64_t end;
};

// An implicit-GEMM convolution with a fused epilogue:
//   out[m, oc] = act(sum_k A[m, k] * w[g][k][oc - g * Cog] + bias[oc] + res[m, oc]),  m = output pixel, oc = g*Cog + j
// where the producer of A depends on the launcher: the im2col gather of x (K = kH*kW*Cg), the 3x3 max pool of x
// (K = Cg), or act(depthwise(x)) (K = Cg, dwsep_conv2d).
struct ConvGemmArgs {
  const void* x = nullptr;  // NHWC input
  int64_t N = 0, H = 0, W = 0, ldx = 0;
  int64_t Ho = 0, Wo = 0;
  int kH = 1, kW = 1, sH = 1, sW = 1, pH = 0, pW = 0, dH = 1, dW = 1;  // window of the gather / depthwise
  int groups = 1;
  int64_t Cg = 0, Cog = 0;     // input / output channels per group
  const void* w = nullptr;     // [groups][K][Cog]
  const void* bias = nullptr;  // [groups * Cog], accumulation type, or null
  const void* res = nullptr;   // residual NHWC [.., groups * Cog], pixels ldr apart, or null
  int64_t ldr = 0;
  Act act = Act::None;
  const void* dw_w = nullptr;  // depthwise weight [kH * kW][Cg], accumulation type (launch_dwsep, launch_depthwise)
  const void* dw_b = nullptr;  // depthwise bias [Cg], accumulation type, or null
  Act dw_act = Act::None;
  const void* scale = nullptr;  // per (image, channel) factor of A, [N][Cg] accumulation type (launch_mbconv)
  int nslices = 1;
  OutSlice out[3] = {};
};

// conv2d_act and the inception KxK / 1x1 convs: A = im2col(x), any groups, stride, padding, dilation.
cudaError_t launch_conv_gemm(DType t, const ConvGemmArgs& a, cudaStream_t stream);
// conv2d_act with groups == C == C_out: a direct depthwise kernel over Cg channels (dw_w, dw_b, res, act, out[0]).
cudaError_t launch_depthwise(DType t, const ConvGemmArgs& a, cudaStream_t stream);
// dwsep_conv2d: A = dw_act(depthwise(x) + dw_b), computed per tile into shared memory, then the pointwise GEMM.
cudaError_t launch_dwsep(DType t, const ConvGemmArgs& a, cudaStream_t stream);
// inception branch 4: A = max_pool2d(x, 3, stride 1, padding 1) computed per tile, then the 1x1 GEMM.
cudaError_t launch_pool_conv(DType t, const ConvGemmArgs& a, cudaStream_t stream);

// The MobileNetV2 block: y = project(act(dw(act(expand(x))))) + (residual ? x : 0), one kernel. Each block owns an
// output tile; the expanded activation of the tile's halo and the depthwise result stay in shared memory.
struct InvResArgs {
  const void* x = nullptr;  // NHWC [N, H, W, C]
  int64_t N = 0, H = 0, W = 0, C = 0, Ho = 0, Wo = 0;
  int stride = 1, kH = 3, kW = 3, pH = 1, pW = 1;
  int64_t hidden = 0, Cout = 0;
  const void* ew = nullptr;  // expansion [C][hidden], or null (no expansion: hidden == C)
  const void* eb = nullptr;  // [hidden] accumulation type, or null
  const void* dw = nullptr;  // [kH * kW][hidden] accumulation type
  const void* db = nullptr;  // [hidden] accumulation type
  const void* pw = nullptr;  // projection [hidden][Cout]
  const void* pb = nullptr;  // [Cout] accumulation type
  bool residual = false;
  Act act = Act::None;
  void* y = nullptr;  // NHWC [N, Ho, Wo, Cout]
};

cudaError_t launch_inverted_residual(DType t, const InvResArgs& a, cudaStream_t stream);

// The mbconv block: the inverted residual above (activation `ir.act`, any depthwise k) with squeeze-and-excitation
// between the depthwise conv and the projection. The SE mean needs an image's whole depthwise output before any pixel
// can be projected, so with SE it runs in three kernels: expansion + depthwise into the scratch `d`, the per-image
// means, SE matvecs and gate into the scratch `s`, then the projection GEMM with A = d * s. Without SE it is exactly
// launch_inverted_residual.
struct MBConvArgs {
  InvResArgs ir;
  int64_t squeeze = 0;          // SE width, 0: no SE
  const void* se_rw = nullptr;  // reduce [squeeze][hidden], accumulation type
  const void* se_rb = nullptr;  // [squeeze]
  const void* se_ew = nullptr;  // expand [hidden][squeeze]
  const void* se_eb = nullptr;  // [hidden]
  Act se_act = Act::None;
  Gate gate = Gate::Sigmoid;
  void* d = nullptr;  // scratch [N * Ho * Wo][hidden], accumulation type (kept in it: the SE mean reads every value)
  void* s = nullptr;  // scratch [N][hidden], accumulation type
};

cudaError_t launch_mbconv(DType t, const MBConvArgs& a, cudaStream_t stream);

// up_concat_conv: the 3x3 conv (padding 1) of cat([skip, up]) with up = conv_transpose2d(up_x, up_w, up_b, stride 2),
// the A tile gathered from skip and computed from up_x per K chunk, so neither the upsampled nor the concatenated
// tensor exists in memory. `conv` is the 3x3 conv over the 2H x 2W output as launch_conv_gemm takes it, with x = skip
// (ldx = Cskip), Cg = Cskip + Cup, w [3][3][Cskip + Cup][Cout], bias, act and out[0].
struct UpConcatArgs {
  ConvGemmArgs conv;
  const void* up_x = nullptr;  // NHWC [N, H, W, Cin], H = conv.H / 2, W = conv.W / 2
  int64_t Cin = 0, Cskip = 0, Cup = 0;
  const void* up_w = nullptr;  // [2][2][Cin][Cup] (tap (p, q) makes upsampled pixel (2y + p, 2x + q)), accumulation type
  const void* up_b = nullptr;  // [Cup], accumulation type, or null
};

cudaError_t launch_up_concat_conv(DType t, const UpConcatArgs& a, cudaStream_t stream);

// Detection ops (csrc/cuda/boxes.cpp). Boxes are contiguous [n][4] (x1, y1, x2, y2).
// box_iou: out [N][M] in the accumulation type (float32 for fp16/bf16 boxes, as torchvision), all dtypes.
cudaError_t launch_box_iou(DType t, const void* boxes1, const void* boxes2, void* out, int64_t N, int64_t M,
                           cudaStream_t stream);

// nms suppression mask of n boxes in rank order (F32 or F64): bit k of word mask[i * words + c], words =
// ceil(n / kNmsBlock), is set when box j = c * kNmsBlock + k ranks below box i (j > i) and their IoU > iou_threshold.
// Words with c < i / kNmsBlock are left unwritten (the greedy reduction starts at box i's own word).
constexpr int kNmsBlock = 64;
cudaError_t launch_nms_mask(DType t, const void* boxes, int64_t n, double iou_threshold, void* mask,
                            cudaStream_t stream);

}  // namespace cnnkernels::cuda
