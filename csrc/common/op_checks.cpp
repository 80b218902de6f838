#include "common/op_checks.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <limits>

namespace cnnkernels {

Conv2dActGeom check_conv2d_act(const at::Tensor& input, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& residual,
                               c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation,
                               int64_t groups, c10::string_view activation) {
  const char* op = "conv2d_act";
  const ConvGeom g = check_conv(op, input, weight, "weight", stride, padding, dilation, groups);
  check_bias(op, input, bias, g.Cout, "bias");
  if (residual.has_value()) check_shape(op, input, *residual, "residual", {g.N, g.Cout, g.Ho, g.Wo});
  return Conv2dActGeom{g, parse_activation(op, "activation", activation)};
}

DwsepGeom check_dwsep(const at::Tensor& input, const at::Tensor& dw_weight, const c10::optional<at::Tensor>& dw_bias,
                      const at::Tensor& pw_weight, const c10::optional<at::Tensor>& pw_bias, c10::IntArrayRef stride,
                      c10::IntArrayRef padding, c10::IntArrayRef dilation, c10::string_view dw_activation,
                      c10::string_view pw_activation) {
  const char* op = "dwsep_conv2d";
  check_input(op, input);
  const int64_t C = input.size(1);
  const ConvGeom g = check_conv(op, input, dw_weight, "dw_weight", stride, padding, dilation, C);
  TORCH_CHECK_VALUE(dw_weight.size(0) == C, "cnnkernels.dwsep_conv2d: dw_weight must have shape [C, 1, kH, kW] with C = ",
                    C, " (one filter per input channel), got shape ", dw_weight.sizes());
  check_bias(op, input, dw_bias, C, "dw_bias");
  const int64_t Cout = check_pointwise(op, input, pw_weight, "pw_weight", C);
  check_bias(op, input, pw_bias, Cout, "pw_bias");
  return DwsepGeom{g, Cout, parse_activation(op, "dw_activation", dw_activation),
                   parse_activation(op, "pw_activation", pw_activation)};
}


// A block's optional 1x1 expansion (weight and bias, or neither); returns the hidden width (C without one).
static int64_t check_expansion(const char* op, const at::Tensor& input, const c10::optional<at::Tensor>& expand_weight,
                               const c10::optional<at::Tensor>& expand_bias) {
  if (!expand_weight.has_value()) {
    TORCH_CHECK_VALUE(!expand_bias.has_value(), "cnnkernels.", op,
                      ": expand_bias must be None when expand_weight is None");
    return input.size(1);
  }
  const int64_t hidden = check_pointwise(op, input, *expand_weight, "expand_weight", input.size(1));
  check_bias(op, input, expand_bias, hidden, "expand_bias");
  return hidden;
}

IRGeom check_inverted_residual(const at::Tensor& input, const c10::optional<at::Tensor>& expand_weight,
                               const c10::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                               const at::Tensor& dw_bias, const at::Tensor& project_weight,
                               const at::Tensor& project_bias, int64_t stride, bool residual,
                               c10::string_view activation) {
  const char* op = "inverted_residual";
  check_input(op, input);
  IRGeom g{};
  g.N = input.size(0); g.C = input.size(1); g.H = input.size(2); g.W = input.size(3);
  g.expand = expand_weight.has_value();
  g.hidden = check_expansion(op, input, expand_weight, expand_bias);
  TORCH_CHECK_VALUE(stride > 0, "cnnkernels.inverted_residual: stride must be positive, got ", stride);
  TORCH_CHECK_VALUE(stride <= kMaxWindowParam, "cnnkernels.inverted_residual: stride must be at most ", kMaxWindowParam,
                    ", got ", stride);
  check_like(op, input, dw_weight, "dw_weight");
  TORCH_CHECK_VALUE(dw_weight.dim() == 4 && dw_weight.size(0) == g.hidden && dw_weight.size(1) == 1 &&
                        dw_weight.size(2) % 2 == 1 && dw_weight.size(3) % 2 == 1,
                    "cnnkernels.inverted_residual: dw_weight must have shape [", g.hidden,
                    ", 1, kH, kW] with odd kH and kW, got shape ", dw_weight.sizes());
  check_bias(op, input, dw_bias, g.hidden, "dw_bias");
  g.Cout = check_pointwise(op, input, project_weight, "project_weight", g.hidden);
  check_bias(op, input, project_bias, g.Cout, "project_bias");
  TORCH_CHECK_VALUE(!residual || (stride == 1 && g.Cout == g.C),
                    "cnnkernels.inverted_residual: residual=True needs stride 1 and as many output as input channels, "
                    "got stride ", stride, ", ", g.C, " -> ", g.Cout, " channels");
  g.act = parse_activation(op, "activation", activation);
  g.residual = residual;
  g.stride = stride;
  g.kH = dw_weight.size(2); g.kW = dw_weight.size(3);
  g.pH = g.kH / 2; g.pW = g.kW / 2;
  g.Ho = (g.H - 1) / stride + 1;
  g.Wo = (g.W - 1) / stride + 1;
  return g;
}


static int64_t check_branch_conv(const char* op, const at::Tensor& input, const at::Tensor& w, const char* arg, int64_t cin) {
  check_like(op, input, w, arg);
  TORCH_CHECK_VALUE(w.dim() == 4 && w.size(0) > 0 && w.size(1) == cin && w.size(2) % 2 == 1 && w.size(3) % 2 == 1,
                    "cnnkernels.inception_block: ", arg, " must have shape [C_out, ", cin,
                    ", kH, kW] with odd kH and kW, got shape ", w.sizes());
  return w.size(0);
}

IncGeom check_inception(const at::Tensor& input, const at::Tensor& w1, const at::Tensor& b1,
                        const at::Tensor& w2_reduce, const at::Tensor& b2_reduce, const at::Tensor& w2,
                        const at::Tensor& b2, const at::Tensor& w3_reduce, const at::Tensor& b3_reduce,
                        const at::Tensor& w3, const at::Tensor& b3, const at::Tensor& w4, const at::Tensor& b4) {
  const char* op = "inception_block";
  check_input(op, input);
  IncGeom g{};
  g.N = input.size(0); g.C = input.size(1); g.H = input.size(2); g.W = input.size(3);
  g.c1 = check_pointwise(op, input, w1, "w1", g.C);
  check_bias(op, input, b1, g.c1, "b1");
  g.c2r = check_pointwise(op, input, w2_reduce, "w2_reduce", g.C);
  check_bias(op, input, b2_reduce, g.c2r, "b2_reduce");
  g.c2 = check_branch_conv(op, input, w2, "w2", g.c2r);
  check_bias(op, input, b2, g.c2, "b2");
  g.c3r = check_pointwise(op, input, w3_reduce, "w3_reduce", g.C);
  check_bias(op, input, b3_reduce, g.c3r, "b3_reduce");
  g.c3 = check_branch_conv(op, input, w3, "w3", g.c3r);
  check_bias(op, input, b3, g.c3, "b3");
  g.c4 = check_pointwise(op, input, w4, "w4", g.C);
  check_bias(op, input, b4, g.c4, "b4");
  return g;
}

MBConvGeom check_mbconv(const at::Tensor& input, const c10::optional<at::Tensor>& expand_weight,
                        const c10::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                        const at::Tensor& dw_bias, const c10::optional<at::Tensor>& se_reduce_weight,
                        const c10::optional<at::Tensor>& se_reduce_bias,
                        const c10::optional<at::Tensor>& se_expand_weight,
                        const c10::optional<at::Tensor>& se_expand_bias, const at::Tensor& project_weight,
                        const at::Tensor& project_bias, int64_t stride, bool residual, c10::string_view activation,
                        c10::string_view se_activation, c10::string_view se_gate) {
  const char* op = "mbconv";
  check_input(op, input);
  MBConvGeom g{};
  g.N = input.size(0); g.C = input.size(1); g.H = input.size(2); g.W = input.size(3);
  g.expand = expand_weight.has_value();
  g.hidden = check_expansion(op, input, expand_weight, expand_bias);
  TORCH_CHECK_VALUE(stride == 1 || stride == 2, "cnnkernels.mbconv: stride must be 1 or 2, got ", stride);
  check_like(op, input, dw_weight, "dw_weight");
  TORCH_CHECK_VALUE(dw_weight.dim() == 4 && dw_weight.size(0) == g.hidden && dw_weight.size(1) == 1 &&
                        dw_weight.size(2) == dw_weight.size(3) && (dw_weight.size(2) == 3 || dw_weight.size(2) == 5),
                    "cnnkernels.mbconv: dw_weight must have shape [", g.hidden,
                    ", 1, k, k] with k 3 or 5, got shape ", dw_weight.sizes());
  check_bias(op, input, dw_bias, g.hidden, "dw_bias");
  const bool se[4] = {se_reduce_weight.has_value(), se_reduce_bias.has_value(), se_expand_weight.has_value(),
                      se_expand_bias.has_value()};
  if (se[0] || se[1] || se[2] || se[3]) {
    static const char* names[4] = {"se_reduce_weight", "se_reduce_bias", "se_expand_weight", "se_expand_bias"};
    std::string missing;
    for (int i = 0; i < 4; ++i) {
      if (!se[i]) missing += std::string(missing.empty() ? "" : ", ") + names[i];
    }
    TORCH_CHECK_VALUE(missing.empty(), "cnnkernels.mbconv: the squeeze-and-excitation tensors come all four or none, "
                      "got None for ", missing);
    g.squeeze = check_pointwise(op, input, *se_reduce_weight, "se_reduce_weight", g.hidden);
    check_bias(op, input, se_reduce_bias, g.squeeze, "se_reduce_bias");
    check_shape(op, input, *se_expand_weight, "se_expand_weight", {g.hidden, g.squeeze, 1, 1});
    check_bias(op, input, se_expand_bias, g.hidden, "se_expand_bias");
  }
  g.Cout = check_pointwise(op, input, project_weight, "project_weight", g.hidden);
  check_bias(op, input, project_bias, g.Cout, "project_bias");
  TORCH_CHECK_VALUE(!residual || (stride == 1 && g.Cout == g.C),
                    "cnnkernels.mbconv: residual=True needs stride 1 and as many output as input channels, got "
                    "stride ", stride, ", ", g.C, " -> ", g.Cout, " channels");
  g.act = parse_activation(op, "activation", activation);
  g.se_act = parse_activation(op, "se_activation", se_activation);
  g.gate = parse_gate(op, "se_gate", se_gate);
  g.residual = residual;
  g.stride = stride;
  g.k = dw_weight.size(2);
  g.pad = g.k / 2;
  g.Ho = (g.H - 1) / stride + 1;
  g.Wo = (g.W - 1) / stride + 1;
  return g;
}

// ---- detection ops: the messages of cnnkernels/ops/_checks.py (check_boxes, check_nms, ...) -----------------------

static void check_boxes(const char* op, const at::Tensor& boxes, const char* arg) {
  check_defined(op, boxes, arg);
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4, "cnnkernels.", op, ": ", arg,
                    " must be a 2-D tensor [N, 4] of (x1, y1, x2, y2) boxes, got shape ", boxes.sizes());
  const auto dt = boxes.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16 || dt == at::kDouble, "cnnkernels.", op,
                   ": ", arg, " must be float32, float16, bfloat16 or float64, got ", dt);
}

static void check_same_place(const char* op, const at::Tensor& ref, const char* ref_arg, const at::Tensor& t,
                             const char* arg, bool dtype = true) {
  TORCH_CHECK_TYPE(!dtype || t.scalar_type() == ref.scalar_type(), "cnnkernels.", op, ": ", arg, " must have ", ref_arg,
                   "'s dtype ", ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == ref.device(), "cnnkernels.", op, ": ", arg, " must be on ", ref_arg, "'s device ",
                    ref.device(), ", got ", t.device());
}

// A 1-D tensor with one entry per box (scores, idxs).
static void check_per_box(const char* op, const at::Tensor& boxes, const at::Tensor& t, const char* arg) {
  check_defined(op, t, arg);
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == boxes.size(0), "cnnkernels.", op, ": ", arg,
                    " must be a 1-D tensor [", boxes.size(0), "] (one per box), got shape ", t.sizes());
}

// NaN compares false with everything: a NaN threshold would silently keep every box.
static void check_threshold(const char* op, const char* arg, double value) {
  TORCH_CHECK_VALUE(!std::isnan(value), "cnnkernels.", op, ": ", arg, " must be a number, got nan");
}

void check_box_iou(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  const char* op = "box_iou";
  check_boxes(op, boxes1, "boxes1");
  check_boxes(op, boxes2, "boxes2");
  check_same_place(op, boxes1, "boxes1", boxes2, "boxes2");
}

void check_nms(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  const char* op = "nms";
  check_boxes(op, boxes, "boxes");
  check_per_box(op, boxes, scores, "scores");
  check_same_place(op, boxes, "boxes", scores, "scores");
  check_threshold(op, "iou_threshold", iou_threshold);
}

void check_batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold) {
  const char* op = "batched_nms";
  check_boxes(op, boxes, "boxes");
  check_per_box(op, boxes, scores, "scores");
  check_same_place(op, boxes, "boxes", scores, "scores");
  check_per_box(op, boxes, idxs, "idxs");
  const auto it = idxs.scalar_type();
  TORCH_CHECK_TYPE(it == at::kByte || it == at::kChar || it == at::kShort || it == at::kInt || it == at::kLong,
                   "cnnkernels.", op, ": idxs must be an integer tensor (int64, int32, int16, int8 or uint8), got ", it);
  check_same_place(op, boxes, "boxes", idxs, "idxs", /*dtype=*/false);
  check_threshold(op, "iou_threshold", iou_threshold);
}

}  // namespace cnnkernels

namespace cnnkernels {

UpConcatGeom check_up_concat_conv(const at::Tensor& input, const at::Tensor& skip, const at::Tensor& up_weight,
                                  const c10::optional<at::Tensor>& up_bias, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias, c10::string_view activation) {
  const char* op = "up_concat_conv";
  check_input(op, input);
  UpConcatGeom g{};
  g.N = input.size(0); g.C = input.size(1); g.H = input.size(2); g.W = input.size(3);
  // An expanded input with H or W near 2**63: 2H would overflow.
  TORCH_CHECK_VALUE(g.H <= std::numeric_limits<int64_t>::max() / 2 &&
                        g.W <= std::numeric_limits<int64_t>::max() / 2, "cnnkernels.up_concat_conv: input spatial size (",
                    g.H, "x", g.W, ") gives an upsampled size beyond int64");
  check_like(op, input, up_weight, "up_weight");
  TORCH_CHECK_VALUE(up_weight.dim() == 4 && up_weight.size(0) == g.C && up_weight.size(1) > 0 &&
                        up_weight.size(2) == 2 && up_weight.size(3) == 2,
                    "cnnkernels.up_concat_conv: up_weight must have shape [", g.C,
                    ", C_up, 2, 2] (a 2x2 stride-2 transposed convolution of the input's ", g.C,
                    " channels), got shape ", up_weight.sizes());
  g.Cup = up_weight.size(1);
  check_bias(op, input, up_bias, g.Cup, "up_bias");
  check_like(op, input, skip, "skip");
  TORCH_CHECK_VALUE(skip.dim() == 4 && skip.size(0) == g.N && skip.size(1) > 0 && skip.size(2) == 2 * g.H &&
                        skip.size(3) == 2 * g.W,
                    "cnnkernels.up_concat_conv: skip must have shape [", g.N, ", C_skip, ", 2 * g.H, ", ", 2 * g.W,
                    "] (twice the input's spatial size), got shape ", skip.sizes());
  g.Cskip = skip.size(1);
  check_like(op, input, weight, "weight");
  TORCH_CHECK_VALUE(weight.dim() == 4 && weight.size(0) > 0 && weight.size(1) == g.Ctot() && weight.size(2) == 3 &&
                        weight.size(3) == 3,
                    "cnnkernels.up_concat_conv: weight must have shape [C_out, ", g.Ctot(),
                    ", 3, 3] (C_skip + C_up = ", g.Cskip, " + ", g.Cup, " input channels), got shape ",
                    weight.sizes());
  g.Cout = weight.size(0);
  check_bias(op, input, bias, g.Cout, "bias");
  g.act = parse_activation(op, "activation", activation);
  return g;
}

}  // namespace cnnkernels
