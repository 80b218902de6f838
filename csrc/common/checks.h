#pragma once
// Input validation shared by every backend (CPU and CUDA wrappers call the same checks, so a bad argument produces the
// same Python exception whichever kernel would have run). ValueError for bad shapes/values, TypeError for dtypes.
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <string_view>

namespace cnnkernels {

// The op activations (cnnkernels/ops/_act.py ACTIVATIONS). SiLU is x * sigmoid(x), HardSwish x * relu6(x + 3) / 6.
enum class Activation : int { None = 0, ReLU = 1, ReLU6 = 2, SiLU = 3, HardSwish = 4 };

// `arg` names the argument in the error message, e.g. "dw_activation".
Activation parse_activation(const char* op, const char* arg, std::string_view value);

// mbconv's squeeze-and-excitation gate: sigmoid(x), or hardsigmoid(x) = relu6(x + 3) / 6.
enum class Gate : int { Sigmoid = 0, HardSigmoid = 1 };
Gate parse_gate(const char* op, const char* arg, std::string_view value);

// Upper bound of stride, padding and dilation (INT32_MAX): the CUDA and Triton kernels hold them in 32 bits, and with
// them bounded no index computation in any kernel can overflow. Larger values are rejected with a ValueError.
constexpr int64_t kMaxWindowParam = 2147483647;
void check_window_param(const char* op, const char* arg, c10::IntArrayRef values);

// Dense 2-D convolution geometry after validation.
struct ConvGeom {
  int64_t N, C, H, W;        // input
  int64_t Cout, kH, kW;      // weight [Cout, C/groups, kH, kW]
  int64_t sH, sW, pH, pW, dH, dW, groups;
  int64_t Ho, Wo;            // output
};

// None passed for a Tensor argument reaches the kernels as an undefined tensor: a TypeError naming `arg`.
void check_defined(const char* op, const at::Tensor& t, const char* arg);
// `input` must be a 4-D floating tensor (fp32/fp16/bf16/fp64) on any device, with C, H and W non-zero (N may be 0).
// Every check below rejects None (an undefined tensor) for a Tensor argument with a TypeError naming it.
void check_input(const char* op, const at::Tensor& input, const char* arg = "input");
// `t` must have the dtype and device of `ref` (the op's input).
void check_like(const char* op, const at::Tensor& ref, const at::Tensor& t, const char* arg);
// Optional bias of shape [n] (same dtype/device as ref).
void check_bias(const char* op, const at::Tensor& ref, const c10::optional<at::Tensor>& bias, int64_t n, const char* arg);
// Validates weight against input and the conv hyper-parameters; returns the geometry (output size checked > 0).
ConvGeom check_conv(const char* op, const at::Tensor& input, const at::Tensor& weight, const char* weight_arg,
                    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups);
// `t` must be 4-D with exactly this shape (dtype/device as ref).
void check_shape(const char* op, const at::Tensor& ref, const at::Tensor& t, const char* arg, c10::IntArrayRef shape);

// A 1x1 conv weight [C_out, cin, 1, 1] (dtype/device as ref); returns C_out.
int64_t check_pointwise(const char* op, const at::Tensor& ref, const at::Tensor& weight, const char* arg, int64_t cin);

// add_relu: any rank, floating dtype, residual of the same shape, dtype and device.
void check_add_relu(const at::Tensor& input, const at::Tensor& residual);

// The layout every kernel writes its output in: channels_last when the input suggests it, otherwise contiguous.
// Mirrors torch._prims_common.suggest_memory_format, which the fake kernels use.
at::MemoryFormat output_memory_format(const at::Tensor& input);

}  // namespace cnnkernels
