// CUDA registration of conv2d_act: validation, weight packing, allocation, device guard and stream; the kernels are in
// conv2d_act_kernel.cu.
#include <torch/library.h>

#include "common/op_checks.h"
#include "cuda/common.h"

namespace cnnkernels::cuda {

namespace {

at::Tensor conv2d_act_cuda(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                           const c10::optional<at::Tensor>& residual, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                           c10::string_view activation) {
  const auto [g, act] = check_conv2d_act(input, weight, bias, residual, stride, padding, dilation, groups, activation);
  const auto fmt = output_memory_format(input);
  const DeviceGuard guard(input.device());
  at::Tensor y = empty_nhwc({g.N, g.Cout, g.Ho, g.Wo}, input.options());
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor res = residual.has_value() ? residual->contiguous(at::MemoryFormat::ChannelsLast) : at::Tensor();
  const at::Tensor b = acc_vector(bias);

  ConvGemmArgs a = conv_args(x, g);
  a.bias = ptr_or_null(b);
  a.res = ptr_or_null(res);
  a.ldr = g.Cout;
  a.act = to_act(act);
  a.out[0] = OutSlice{y.data_ptr(), g.Cout, g.Cout};

  at::Tensor wp;
  cudaError_t err;
  if (g.groups > 1 && g.groups == g.C && g.Cout == g.C) {  // depthwise: a direct kernel
    wp = pack_depthwise_weight(weight);
    a.dw_w = wp.const_data_ptr();
    a.dw_b = a.bias;
    a.Cg = a.Cog = g.C;
    err = launch_depthwise(cuda_dtype(x), a, current_stream());
  } else {
    wp = pack_gemm_weight(weight, g.groups);
    a.w = wp.const_data_ptr();
    a.groups = static_cast<int>(g.groups);
    a.Cg = g.C / g.groups;
    a.Cog = g.Cout / g.groups;
    err = launch_conv_gemm(cuda_dtype(x), a, current_stream());
  }
  check_launch(err, "conv2d_act");
  return in_format(y, fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(CNNKERNELS_IMPL_NS, CNNKERNELS_IMPL_KEY, m) {
  m.impl("conv2d_act", &conv2d_act_cuda);
}

}  // namespace cnnkernels::cuda
