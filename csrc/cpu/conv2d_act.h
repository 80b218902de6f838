#pragma once
#include <ATen/core/Tensor.h>

#include "common/checks.h"

namespace cnnkernels::cpu {

// The NHWC core of conv2d_act, reused by the fused ops: x and res channels_last contiguous, y preallocated
// channels_last [N, Cout, Ho, Wo]; bias_f32 fp32 or undefined. Parallel over output rows.
void conv2d_act_nhwc(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias_f32, const at::Tensor& res,
                     const ConvGeom& g, Activation act, at::Tensor& y);

// fp64 (used by gradcheck) is computed by ATen; the kernels are fp32/fp16/bf16.
at::Tensor conv2d_act_reference_fp64(const at::Tensor& input, const at::Tensor& weight,
                                     const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& residual,
                                     const ConvGeom& g, Activation act);

}  // namespace cnnkernels::cpu
