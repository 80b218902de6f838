// CUDA registration of inverted_residual: validation, weight packing, allocation, device guard and stream; the fused
// kernel is in inverted_residual_kernel.cu.
#include <torch/library.h>

#include "common/op_checks.h"
#include "cuda/common.h"

namespace cnnkernels::cuda {

namespace {

at::Tensor inverted_residual_cuda(const at::Tensor& input, const c10::optional<at::Tensor>& expand_weight,
                                  const c10::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                                  const at::Tensor& dw_bias, const at::Tensor& project_weight,
                                  const at::Tensor& project_bias, int64_t stride, bool residual,
                                  c10::string_view activation) {
  const IRGeom g = check_inverted_residual(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                                           project_bias, stride, residual, activation);
  const auto fmt = output_memory_format(input);
  const DeviceGuard guard(input.device());
  at::Tensor y = empty_nhwc({g.N, g.Cout, g.Ho, g.Wo}, input.options());
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor ew = g.expand ? pack_gemm_weight(*expand_weight, 1) : at::Tensor();
  const at::Tensor eb = acc_vector(expand_bias);
  const at::Tensor dw = pack_depthwise_weight(dw_weight), db = acc_vector(dw_bias);
  const at::Tensor pw = pack_gemm_weight(project_weight, 1), pb = acc_vector(project_bias);

  InvResArgs a;
  a.x = x.const_data_ptr();
  a.N = g.N; a.H = g.H; a.W = g.W; a.C = g.C; a.Ho = g.Ho; a.Wo = g.Wo;
  a.stride = static_cast<int>(g.stride);
  a.kH = static_cast<int>(g.kH); a.kW = static_cast<int>(g.kW);
  a.pH = static_cast<int>(g.pH); a.pW = static_cast<int>(g.pW);
  a.hidden = g.hidden;
  a.Cout = g.Cout;
  a.ew = ptr_or_null(ew);
  a.eb = ptr_or_null(eb);
  a.dw = dw.const_data_ptr();
  a.db = db.const_data_ptr();
  a.pw = pw.const_data_ptr();
  a.pb = pb.const_data_ptr();
  a.residual = g.residual;
  a.act = to_act(g.act);
  a.y = y.data_ptr();
  check_launch(launch_inverted_residual(cuda_dtype(x), a, current_stream()), "inverted_residual");
  return in_format(y, fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(CNNKERNELS_IMPL_NS, CNNKERNELS_IMPL_KEY, m) {
  m.impl("inverted_residual", &inverted_residual_cuda);
}

}  // namespace cnnkernels::cuda
