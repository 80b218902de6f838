// CUDA registration of dwsep_conv2d: validation, weight packing, allocation, device guard and stream; the fused kernel
// is in dwsep_conv2d_kernel.cu.
#include <torch/library.h>

#include "common/op_checks.h"
#include "cuda/common.h"

namespace cnnkernels::cuda {

namespace {

at::Tensor dwsep_conv2d_cuda(const at::Tensor& input, const at::Tensor& dw_weight,
                             const c10::optional<at::Tensor>& dw_bias, const at::Tensor& pw_weight,
                             const c10::optional<at::Tensor>& pw_bias, c10::IntArrayRef stride,
                             c10::IntArrayRef padding, c10::IntArrayRef dilation, c10::string_view dw_activation,
                             c10::string_view pw_activation) {
  const DwsepGeom d = check_dwsep(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation,
                                  dw_activation, pw_activation);
  const ConvGeom& g = d.g;
  const auto fmt = output_memory_format(input);
  const DeviceGuard guard(input.device());
  at::Tensor y = empty_nhwc({g.N, d.Cout, g.Ho, g.Wo}, input.options());
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor dw = pack_depthwise_weight(dw_weight), dwb = acc_vector(dw_bias);
  const at::Tensor pw = pack_gemm_weight(pw_weight, 1), pwb = acc_vector(pw_bias);

  ConvGemmArgs a = conv_args(x, g);
  a.Cg = g.C;
  a.Cog = d.Cout;
  a.w = pw.const_data_ptr();
  a.bias = ptr_or_null(pwb);
  a.act = to_act(d.pw_act);
  a.dw_w = dw.const_data_ptr();
  a.dw_b = ptr_or_null(dwb);
  a.dw_act = to_act(d.dw_act);
  a.out[0] = OutSlice{y.data_ptr(), d.Cout, d.Cout};
  check_launch(launch_dwsep(cuda_dtype(x), a, current_stream()), "dwsep_conv2d");
  return in_format(y, fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(CNNKERNELS_IMPL_NS, CNNKERNELS_IMPL_KEY, m) {
  m.impl("dwsep_conv2d", &dwsep_conv2d_cuda);
}

}  // namespace cnnkernels::cuda
