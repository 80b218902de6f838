// conv2d_act: act(conv2d(input, weight, bias) + residual) with bias, residual and activation applied in the kernel's
// epilogue while the output tile is still in registers (no extra pass over memory).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/op_checks.h"
#include "cpu/common.h"
#include "cpu/conv2d_act.h"
#include "cpu/weight_cache.h"

namespace cnnkernels::cpu {

at::Tensor conv2d_act_reference_fp64(const at::Tensor& input, const at::Tensor& weight,
                                     const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& residual,
                                     const ConvGeom& g, Activation act) {
  at::Tensor y = at::convolution(input, weight, bias, {g.sH, g.sW}, {g.pH, g.pW}, {g.dH, g.dW}, false, {0, 0}, g.groups);
  if (residual.has_value()) y = y + *residual;
  return in_format(activation_reference(y, act), output_memory_format(input));
}

void conv2d_act_nhwc(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias_f32,
                     const at::Tensor& res, const ConvGeom& g, Activation act, at::Tensor& y) {
  const auto& k = kernels();
  const bool depthwise = g.groups == g.C && g.Cout == g.C && g.groups > 1;
  const at::Tensor wp = depthwise ? packed_depthwise_weight(weight) : packed_conv_weight(weight, g.groups, k.panel);
  const int64_t Cg = g.C / g.groups, Cog = g.Cout / g.groups;
  const int64_t panels = (Cog + k.panel - 1) / k.panel;
  const int64_t group_stride = panels * g.kH * g.kW * Cg * k.panel;
  const int64_t es = x.element_size();
  const int64_t panel_size = g.kH * g.kW * Cg * k.panel;
  // Work items are output rows x column blocks (a group, or a range of weight panels within one). Splitting columns
  // keeps both threads busy on layers with few rows, such as 7x7 maps at batch 1.
  const int64_t rows = g.N * g.Ho;
  const int64_t split =
      depthwise ? 1 : std::clamp<int64_t>((4 * at::get_num_threads() + rows - 1) / rows, 1, panels);
  const int64_t panels_per_block = (panels + split - 1) / split;
  const int64_t cols = depthwise ? 1 : g.groups * split;
  at::parallel_for(0, cols * rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end;) {
      const int64_t col = t / rows, r = t % rows;
      const int64_t n = r / g.Ho, oh0 = r % g.Ho, oh1 = std::min(g.Ho, oh0 + (end - t));
      t += oh1 - oh0;
      const RowsIn in = image_rows(x, n);
      const RowsOut out = image_out(y, n, oh0);
      const void* rp = res.defined() ? pixel_ptr(res, n, oh0) : nullptr;
      if (depthwise) {
        k.depthwise_rows(DwRowsArgs{in, g.C, wp.const_data_ptr<float>(), g.kH, g.kW, g.sH, g.sW, g.pH, g.pW, g.dH,
                                    g.dW, ptr_or_null(bias_f32), out, rp, g.Cout, act, oh0, oh1});
        continue;
      }
      const int64_t grp = col / split, p0 = (col % split) * panels_per_block;
      const int64_t p1 = std::min(panels, p0 + panels_per_block);
      if (p0 >= p1) continue;
      const int64_t c0 = grp * Cog + p0 * k.panel;  // first output channel of this block
      const int64_t nc = std::min(Cog, p1 * k.panel) - p0 * k.panel;
      RowsIn gin = in;
      gin.data = static_cast<const char*>(in.data) + grp * Cg * es;
      RowsOut gout = out;
      gout.data = static_cast<char*>(out.data) + c0 * es;
      k.conv_rows(ConvRowsArgs{gin, Cg, wp.const_data_ptr<float>() + grp * group_stride + p0 * panel_size, nc, g.kH,
                               g.kW, g.sH, g.sW, g.pH, g.pW, g.dH, g.dW,
                               bias_f32.defined() ? bias_f32.const_data_ptr<float>() + c0 : nullptr, gout,
                               rp ? static_cast<const char*>(rp) + c0 * es : nullptr, g.Cout, act, oh0, oh1});
    }
  });
}

namespace {

at::Tensor conv2d_act_cpu(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                          const c10::optional<at::Tensor>& residual, c10::IntArrayRef stride,
                          c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups,
                          c10::string_view activation) {
  const auto [g, act] = check_conv2d_act(input, weight, bias, residual, stride, padding, dilation, groups, activation);
  const auto fmt = output_memory_format(input);
  if (input.scalar_type() == at::kDouble) return conv2d_act_reference_fp64(input, weight, bias, residual, g, act);
  at::Tensor y = at::empty({g.N, g.Cout, g.Ho, g.Wo}, input.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor res = residual.has_value() ? residual->contiguous(at::MemoryFormat::ChannelsLast) : at::Tensor();
  conv2d_act_nhwc(x, weight, float_bias(bias), res, g, act, y);
  return in_format(y, fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnkernels, CPU, m) {
  m.impl("conv2d_act", &conv2d_act_cpu);
}

}  // namespace cnnkernels::cpu
