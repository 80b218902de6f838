// dwsep_conv2d: depthwise KxK conv + act, then pointwise 1x1 conv + act, in one pass. Each task computes a band of
// depthwise output rows into a per-thread fp32 buffer sized to stay in L2 and immediately multiplies it by the
// pointwise weights, so the depthwise activation never travels to memory.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/op_checks.h"
#include "cpu/common.h"
#include "cpu/stages.h"
#include "cpu/weight_cache.h"

namespace cnnkernels::cpu {

namespace {

constexpr int64_t kBandBytes = 192 * 1024;  // depthwise band per thread: L2-resident next to the pointwise weights

at::Tensor dwsep_conv2d_cpu(const at::Tensor& input, const at::Tensor& dw_weight,
                            const c10::optional<at::Tensor>& dw_bias, const at::Tensor& pw_weight,
                            const c10::optional<at::Tensor>& pw_bias, c10::IntArrayRef stride,
                            c10::IntArrayRef padding, c10::IntArrayRef dilation, c10::string_view dw_activation,
                            c10::string_view pw_activation) {
  const DwsepGeom d = check_dwsep(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation,
                                  dw_activation, pw_activation);
  const ConvGeom& g = d.g;
  const auto fmt = output_memory_format(input);
  if (input.scalar_type() == at::kDouble) {  // fp64 exists for gradcheck; ATen computes it
    at::Tensor h = activation_reference(at::conv2d(input, dw_weight, dw_bias, stride, padding, dilation, g.C), d.dw_act);
    return in_format(activation_reference(at::conv2d(h, pw_weight, pw_bias), d.pw_act), fmt);
  }
  at::Tensor y = at::empty({g.N, d.Cout, g.Ho, g.Wo}, input.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const auto& k = kernels();
  const at::Tensor dw_w = packed_depthwise_weight(dw_weight);
  const at::Tensor pw_w = packed_conv_weight(pw_weight, 1, k.panel);
  const at::Tensor dw_b = float_bias(dw_bias), pw_b = float_bias(pw_bias);
  const int64_t band = std::clamp<int64_t>(kBandBytes / (g.Wo * g.C * 4), 1, g.Ho);
  at::parallel_for(0, g.N * g.Ho, 1, [&](int64_t begin, int64_t end) {
    float* buf = scratch(static_cast<size_t>(band * g.Wo * g.C), 0);
    for (int64_t r = begin; r < end;) {
      const int64_t n = r / g.Ho, oh0 = r % g.Ho, oh1 = std::min({g.Ho, oh0 + (end - r), oh0 + band});
      k.depthwise_rows(DwRowsArgs{image_rows(x, n), g.C, dw_w.const_data_ptr<float>(), g.kH, g.kW, g.sH, g.sW, g.pH,
                                  g.pW, g.dH, g.dW, ptr_or_null(dw_b), RowsOut{buf, DType::F32, g.Wo, g.C}, nullptr, 0,
                                  d.dw_act, oh0, oh1});
      const RowsOut out = image_out(y, n, oh0);
      pointwise(k, buf, DType::F32, g.C, (oh1 - oh0) * g.Wo, g.C, pw_w.const_data_ptr<float>(), d.Cout,
                ptr_or_null(pw_b), out.data, out.type, d.Cout, nullptr, 0, d.pw_act);
      r += oh1 - oh0;
    }
  });
  return in_format(y, fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnkernels, CPU, m) {
  m.impl("dwsep_conv2d", &dwsep_conv2d_cpu);
}

}  // namespace cnnkernels::cpu
