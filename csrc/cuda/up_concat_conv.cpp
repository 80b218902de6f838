// CUDA registration of up_concat_conv: validation, weight packing, allocation, device guard and stream; the kernel is in
// up_concat_conv_kernel.cu.
#include <torch/library.h>

#include "common/op_checks.h"
#include "cuda/common.h"

namespace cnnkernels::cuda {

namespace {

at::Tensor up_concat_conv_cuda(const at::Tensor& input, const at::Tensor& skip, const at::Tensor& up_weight,
                               const c10::optional<at::Tensor>& up_bias, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias, c10::string_view activation) {
  const UpConcatGeom g = check_up_concat_conv(input, skip, up_weight, up_bias, weight, bias, activation);
  const auto fmt = output_memory_format(input);
  const DeviceGuard guard(input.device());
  const int64_t Ho = 2 * g.H, Wo = 2 * g.W;
  at::Tensor y = empty_nhwc({g.N, g.Cout, Ho, Wo}, input.options());
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor s = skip.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor w = pack_gemm_weight(weight, 1), b = acc_vector(bias);
  const at::Tensor uw = pack_up2x2_weight(up_weight);
  const at::Tensor ub = acc_vector(up_bias);

  UpConcatArgs u;
  ConvGemmArgs& a = u.conv;
  a.x = s.const_data_ptr();
  a.N = g.N; a.H = Ho; a.W = Wo; a.ldx = g.Cskip; a.Ho = Ho; a.Wo = Wo;
  a.kH = a.kW = 3;
  a.pH = a.pW = 1;
  a.Cg = g.Ctot();
  a.Cog = g.Cout;
  a.w = w.const_data_ptr();
  a.bias = ptr_or_null(b);
  a.act = to_act(g.act);
  a.out[0] = OutSlice{y.data_ptr(), g.Cout, g.Cout};
  u.up_x = x.const_data_ptr();
  u.Cin = g.C;
  u.Cskip = g.Cskip;
  u.Cup = g.Cup;
  u.up_w = uw.const_data_ptr();
  u.up_b = ptr_or_null(ub);
  check_launch(launch_up_concat_conv(cuda_dtype(x), u, current_stream()), "up_concat_conv");
  return in_format(y, fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(CNNKERNELS_IMPL_NS, CNNKERNELS_IMPL_KEY, m) {
  m.impl("up_concat_conv", &up_concat_conv_cuda);
}

}  // namespace cnnkernels::cuda
