// CUDA registration of mbconv: validation, weight packing, scratch and output allocation, device guard and stream; the
// kernels are in mbconv_kernel.cu.
#include <torch/library.h>

#include "common/op_checks.h"
#include "cuda/common.h"

namespace cnnkernels::cuda {

namespace {

at::Tensor mbconv_cuda(const at::Tensor& input, const c10::optional<at::Tensor>& expand_weight,
                       const c10::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                       const at::Tensor& dw_bias, const c10::optional<at::Tensor>& se_reduce_weight,
                       const c10::optional<at::Tensor>& se_reduce_bias,
                       const c10::optional<at::Tensor>& se_expand_weight,
                       const c10::optional<at::Tensor>& se_expand_bias, const at::Tensor& project_weight,
                       const at::Tensor& project_bias, int64_t stride, bool residual, c10::string_view activation,
                       c10::string_view se_activation, c10::string_view se_gate) {
  const MBConvGeom g = check_mbconv(input, expand_weight, expand_bias, dw_weight, dw_bias, se_reduce_weight,
                                    se_reduce_bias, se_expand_weight, se_expand_bias, project_weight, project_bias,
                                    stride, residual, activation, se_activation, se_gate);
  const auto fmt = output_memory_format(input);
  const DeviceGuard guard(input.device());
  at::Tensor y = empty_nhwc({g.N, g.Cout, g.Ho, g.Wo}, input.options());
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor ew = g.expand ? pack_gemm_weight(*expand_weight, 1) : at::Tensor();
  const at::Tensor eb = acc_vector(expand_bias);
  const at::Tensor dw = pack_depthwise_weight(dw_weight), db = acc_vector(dw_bias);
  const at::Tensor pw = pack_gemm_weight(project_weight, 1), pb = acc_vector(project_bias);
  // The SE weights [S, hidden, 1, 1] and [hidden, S, 1, 1], row-major: exactly the matrices the gate kernel reads.
  const at::Tensor rw = acc_vector(se_reduce_weight), rb = acc_vector(se_reduce_bias);
  const at::Tensor sw = acc_vector(se_expand_weight), sb = acc_vector(se_expand_bias);

  MBConvArgs a;
  InvResArgs& ir = a.ir;
  ir.x = x.const_data_ptr();
  ir.N = g.N; ir.H = g.H; ir.W = g.W; ir.C = g.C; ir.Ho = g.Ho; ir.Wo = g.Wo;
  ir.stride = static_cast<int>(g.stride);
  ir.kH = ir.kW = static_cast<int>(g.k);
  ir.pH = ir.pW = static_cast<int>(g.pad);
  ir.hidden = g.hidden;
  ir.Cout = g.Cout;
  ir.ew = ptr_or_null(ew);
  ir.eb = ptr_or_null(eb);
  ir.dw = dw.const_data_ptr();
  ir.db = db.const_data_ptr();
  ir.pw = pw.const_data_ptr();
  ir.pb = pb.const_data_ptr();
  ir.residual = g.residual;
  ir.act = to_act(g.act);
  ir.y = y.data_ptr();
  at::Tensor d, s;
  if (g.se()) {
    const auto acc = input.options().dtype(acc_type(input));
    d = at::empty({g.N * g.Ho * g.Wo * g.hidden}, acc);
    s = at::empty({g.N, g.hidden}, acc);
    a.squeeze = g.squeeze;
    a.se_rw = rw.const_data_ptr();
    a.se_rb = rb.const_data_ptr();
    a.se_ew = sw.const_data_ptr();
    a.se_eb = sb.const_data_ptr();
    a.se_act = to_act(g.se_act);
    a.gate = to_gate(g.gate);
    a.d = d.data_ptr();
    a.s = s.data_ptr();
  }
  check_launch(launch_mbconv(cuda_dtype(x), a, current_stream()), "mbconv");
  return in_format(y, fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(CNNKERNELS_IMPL_NS, CNNKERNELS_IMPL_KEY, m) {
  m.impl("mbconv", &mbconv_cuda);
}

}  // namespace cnnkernels::cuda
