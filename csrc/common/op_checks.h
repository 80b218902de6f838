#pragma once
// Validation of each op's arguments, shared by the CPU and CUDA wrappers so every backend raises the same exception.
// Mirrored in Python by the `_check` functions in cnnkernels/ops/<op>.py (fake kernels and the fallback).
#include <ATen/core/Tensor.h>

#include "common/checks.h"

namespace cnnkernels {

struct Conv2dActGeom {
  ConvGeom g;
  Activation act;
};
Conv2dActGeom check_conv2d_act(const at::Tensor& input, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& residual,
                               c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                               int64_t groups, c10::string_view activation);

struct DwsepGeom {
  ConvGeom g;  // the depthwise stage (Cout == C)
  int64_t Cout;
  Activation dw_act, pw_act;
};
DwsepGeom check_dwsep(const at::Tensor& input, const at::Tensor& dw_weight, const c10::optional<at::Tensor>& dw_bias,
                      const at::Tensor& pw_weight, const c10::optional<at::Tensor>& pw_bias, c10::IntArrayRef stride,
                      c10::IntArrayRef padding, c10::IntArrayRef dilation, c10::string_view dw_activation,
                      c10::string_view pw_activation);

struct IRGeom {
  int64_t N, C, H, W, hidden, kH, kW, stride, pH, pW, Ho, Wo, Cout;
  bool expand, residual;
  Activation act;
};
IRGeom check_inverted_residual(const at::Tensor& input, const c10::optional<at::Tensor>& expand_weight,
                               const c10::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                               const at::Tensor& dw_bias, const at::Tensor& project_weight,
                               const at::Tensor& project_bias, int64_t stride, bool residual,
                               c10::string_view activation);

struct MBConvGeom {
  int64_t N, C, H, W, hidden, k, stride, pad, Ho, Wo, Cout, squeeze;  // squeeze: SE width (0: no SE stage)
  bool expand, residual;
  Activation act, se_act;
  Gate gate;
  bool se() const { return squeeze > 0; }
};
MBConvGeom check_mbconv(const at::Tensor& input, const c10::optional<at::Tensor>& expand_weight,
                        const c10::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                        const at::Tensor& dw_bias, const c10::optional<at::Tensor>& se_reduce_weight,
                        const c10::optional<at::Tensor>& se_reduce_bias,
                        const c10::optional<at::Tensor>& se_expand_weight,
                        const c10::optional<at::Tensor>& se_expand_bias, const at::Tensor& project_weight,
                        const at::Tensor& project_bias, int64_t stride, bool residual, c10::string_view activation,
                        c10::string_view se_activation, c10::string_view se_gate);

struct IncGeom {
  int64_t N, C, H, W, c1, c2r, c2, c3r, c3, c4;
  int64_t Ctot() const { return c1 + c2 + c3 + c4; }
};
IncGeom check_inception(const at::Tensor& input, const at::Tensor& w1, const at::Tensor& b1,
                        const at::Tensor& w2_reduce, const at::Tensor& b2_reduce, const at::Tensor& w2,
                        const at::Tensor& b2, const at::Tensor& w3_reduce, const at::Tensor& b3_reduce,
                        const at::Tensor& w3, const at::Tensor& b3, const at::Tensor& w4, const at::Tensor& b4);

// Detection ops (cnnkernels/ops/boxes.py): [N, 4] floating boxes, one score (same dtype) and one integer class
// index per box, thresholds that are not NaN.
void check_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2);
void check_nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold);
void check_batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold);

}  // namespace cnnkernels

namespace cnnkernels {

struct UpConcatGeom {
  int64_t N, C, H, W;  // input; the skip tensor and the output are 2H x 2W
  int64_t Cup, Cskip, Cout;
  Activation act;
  int64_t Ctot() const { return Cskip + Cup; }
};
UpConcatGeom check_up_concat_conv(const at::Tensor& input, const at::Tensor& skip, const at::Tensor& up_weight,
                                  const c10::optional<at::Tensor>& up_bias, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias, c10::string_view activation);

}  // namespace cnnkernels
