#include "common/checks.h"

#include <c10/util/Exception.h>
#include <c10/util/safe_numerics.h>

#include <cstdint>
#include <limits>

namespace cnnkernels {

Activation parse_activation(const char* op, const char* arg, std::string_view value) {
  if (value == "none") return Activation::None;
  if (value == "relu") return Activation::ReLU;
  if (value == "relu6") return Activation::ReLU6;
  if (value == "silu") return Activation::SiLU;
  if (value == "hardswish") return Activation::HardSwish;
  TORCH_CHECK_VALUE(false, "cnnkernels.", op, ": ", arg,
                    " must be one of 'none', 'relu', 'relu6', 'silu', 'hardswish', got '", value, "'");
}

Gate parse_gate(const char* op, const char* arg, std::string_view value) {
  if (value == "sigmoid") return Gate::Sigmoid;
  if (value == "hardsigmoid") return Gate::HardSigmoid;
  TORCH_CHECK_VALUE(false, "cnnkernels.", op, ": ", arg, " must be one of 'sigmoid', 'hardsigmoid', got '", value,
                    "'");
}

void check_defined(const char* op, const at::Tensor& t, const char* arg) {
  TORCH_CHECK_TYPE(t.defined(), "cnnkernels.", op, ": ", arg, " must be a tensor, got None");
}

void check_input(const char* op, const at::Tensor& input, const char* arg) {
  check_defined(op, input, arg);
  TORCH_CHECK_VALUE(input.dim() == 4, "cnnkernels.", op, ": ", arg, " must be a 4-D tensor [N, C, H, W], got ",
                    input.dim(), "-D shape ", input.sizes());
  const auto dt = input.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble, "cnnkernels.", op,
                   ": ", arg, " must be float32, float16, bfloat16 or float64, got ", dt);
  // Zero channels or an empty map (F.conv2d: an oddly shaped empty result, resp. an error): rejected, not computed.
  TORCH_CHECK_VALUE(input.size(1) > 0, "cnnkernels.", op, ": ", arg, " must have at least one channel, got shape ",
                    input.sizes());
  TORCH_CHECK_VALUE(input.size(2) > 0 && input.size(3) > 0, "cnnkernels.", op, ": ", arg,
                    " spatial size must be non-zero, got ", input.size(2), "x", input.size(3));
}

void check_like(const char* op, const at::Tensor& ref, const at::Tensor& t, const char* arg) {
  check_defined(op, t, arg);
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), "cnnkernels.", op, ": ", arg, " must have the input's dtype ",
                   ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == ref.device(), "cnnkernels.", op, ": ", arg, " must be on the input's device ",
                    ref.device(), ", got ", t.device());
}

void check_bias(const char* op, const at::Tensor& ref, const c10::optional<at::Tensor>& bias, int64_t n,
                const char* arg) {
  if (!bias.has_value()) return;
  check_like(op, ref, *bias, arg);
  TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == n, "cnnkernels.", op, ": ", arg, " must have shape [", n,
                    "], got ", bias->sizes());
}

void check_shape(const char* op, const at::Tensor& ref, const at::Tensor& t, const char* arg, c10::IntArrayRef shape) {
  check_like(op, ref, t, arg);
  TORCH_CHECK_VALUE(t.sizes() == shape, "cnnkernels.", op, ": ", arg, " must have shape ", shape, ", got ", t.sizes());
}

void check_window_param(const char* op, const char* arg, c10::IntArrayRef values) {
  for (const int64_t v : values)
    TORCH_CHECK_VALUE(v <= kMaxWindowParam, "cnnkernels.", op, ": ", arg, " must be at most ", kMaxWindowParam,
                      ", got ", values);
}

namespace {

constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

// (in + 2 * pad - dil * (k - 1) - 1) / stride + 1 in exact arithmetic (in, k >= 1 up to INT64_MAX, e.g. expanded
// views; stride, pad, dil in [1, kMaxWindowParam] resp. [0, ..]), 0 when the dilated kernel is larger than the padded
// input. Signed arithmetic would overflow (undefined behaviour) on such arguments and accept them with a wrong size.
uint64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
  const uint64_t padded = static_cast<uint64_t>(in) + 2 * static_cast<uint64_t>(pad);  // < 2**64
  uint64_t span;  // dil * (k - 1): the dilated kernel covers span + 1 pixels
  if (c10::mul_overflows(static_cast<uint64_t>(dil), static_cast<uint64_t>(k - 1), &span) || span >= padded) return 0;
  return (padded - span - 1) / static_cast<uint64_t>(stride) + 1;
}

}  // namespace

ConvGeom check_conv(const char* op, const at::Tensor& input, const at::Tensor& weight, const char* warg,
                    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  check_input(op, input);
  check_like(op, input, weight, warg);
  TORCH_CHECK_VALUE(weight.dim() == 4, "cnnkernels.", op, ": ", warg,
                    " must be a 4-D tensor [C_out, C_in/groups, kH, kW], got shape ", weight.sizes());
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, "cnnkernels.", op,
                    ": stride, padding and dilation must have 2 elements each");
  TORCH_CHECK_VALUE(stride[0] > 0 && stride[1] > 0, "cnnkernels.", op, ": stride must be positive, got ", stride);
  TORCH_CHECK_VALUE(padding[0] >= 0 && padding[1] >= 0, "cnnkernels.", op, ": padding must be non-negative, got ",
                    padding);
  TORCH_CHECK_VALUE(dilation[0] > 0 && dilation[1] > 0, "cnnkernels.", op, ": dilation must be positive, got ",
                    dilation);
  TORCH_CHECK_VALUE(groups > 0, "cnnkernels.", op, ": groups must be positive, got ", groups);
  check_window_param(op, "stride", stride);
  check_window_param(op, "padding", padding);
  check_window_param(op, "dilation", dilation);
  ConvGeom g{};
  g.N = input.size(0); g.C = input.size(1); g.H = input.size(2); g.W = input.size(3);
  g.Cout = weight.size(0); g.kH = weight.size(2); g.kW = weight.size(3);
  g.sH = stride[0]; g.sW = stride[1]; g.pH = padding[0]; g.pW = padding[1]; g.dH = dilation[0]; g.dW = dilation[1];
  g.groups = groups;
  TORCH_CHECK_VALUE(g.C % groups == 0 && g.Cout % groups == 0, "cnnkernels.", op, ": groups=", groups,
                    " must divide the input channels (", g.C, ") and ", warg, ".size(0) (", g.Cout, ")");
  TORCH_CHECK_VALUE(weight.size(1) == g.C / groups, "cnnkernels.", op, ": ", warg, " must have C_in/groups = ",
                    g.C / groups, " in dim 1 for input with ", g.C, " channels and groups=", groups, ", got shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(g.Cout > 0 && g.kH > 0 && g.kW > 0, "cnnkernels.", op, ": ", warg,
                    " must have non-zero C_out and kernel size, got shape ", weight.sizes());
  const uint64_t Ho = conv_out_size(g.H, g.kH, g.sH, g.pH, g.dH), Wo = conv_out_size(g.W, g.kW, g.sW, g.pW, g.dW);
  TORCH_CHECK_VALUE(Ho > 0 && Wo > 0, "cnnkernels.", op, ": input spatial size (", g.H, "x", g.W, ") with padding ",
                    padding, " is smaller than the dilated kernel (", g.kH, "x", g.kW, ", dilation ", dilation, ")");
  TORCH_CHECK_VALUE(Ho <= kInt64Max && Wo <= kInt64Max, "cnnkernels.", op, ": input spatial size (", g.H, "x", g.W,
                    ") with padding ", padding, " and stride ", stride, " gives an output size (", Ho, "x", Wo,
                    ") beyond int64");
  g.Ho = static_cast<int64_t>(Ho);
  g.Wo = static_cast<int64_t>(Wo);
  return g;
}

int64_t check_pointwise(const char* op, const at::Tensor& ref, const at::Tensor& weight, const char* arg,
                        int64_t cin) {
  check_like(op, ref, weight, arg);
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(1) == cin && weight.size(2) == 1 && weight.size(3) == 1 &&
                        weight.size(0) > 0,
                    "cnnkernels.", op, ": ", arg, " must be a 1x1 convolution weight [C_out, ", cin,
                    ", 1, 1], got shape ", weight.sizes());
  return weight.size(0);
}

void check_add_relu(const at::Tensor& input, const at::Tensor& residual) {
  check_defined("add_relu", input, "input");
  const auto dt = input.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble,
                   "cnnkernels.add_relu: input must be float32, float16, bfloat16 or float64, got ", dt);
  check_like("add_relu", input, residual, "residual");
  TORCH_CHECK_VALUE(input.sizes() == residual.sizes(), "cnnkernels.add_relu: residual must have the input's shape ",
                    input.sizes(), ", got ", residual.sizes());
}

at::MemoryFormat output_memory_format(const at::Tensor& input) {
  return input.suggest_memory_format();
}

}  // namespace cnnkernels
