// mbconv: EfficientNet's / MobileNet v3's block. Without a squeeze-and-excitation (SE) stage it is an inverted residual
// and runs that op's one-pass pipeline. With SE, the gate needs the mean of the whole depthwise output d of an image
// before the projection can start, so each image takes two passes:
//   1. expand (into a per-thread ring of rows, as inverted_residual) and depthwise-filter every output row into a
//      buffer D holding d for the whole image (fp32, Ho x Wo x hidden);
//   2. per-channel means of D, the two SE 1x1 convs on them and the gate, then D's channels scaled by the gate, a
//      band of pixels at a time, and projected (residual added in the GEMM's epilogue).
// D is one image's, so the expanded activations never go to memory and d does only when it outgrows the cache: with
// at least as many images as threads each thread takes whole images with its own D; with fewer (batch 1), the
// threads share one image's D and split each pass between them (pass 1 by rows, or by hidden channels on small maps).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "common/op_checks.h"
#include "cpu/common.h"
#include "cpu/inverted_residual.h"
#include "cpu/stages.h"
#include "cpu/weight_cache.h"

namespace cnnkernels::cpu {

namespace {

constexpr int64_t kMinBandPixels = 160;  // output pixels per depthwise band / projection GEMM call

struct SEWeights {
  const float *rw, *rb, *ew, *eb;  // packed reduce [S x hidden] and expand [hidden x S] 1x1 convs, fp32 biases
};

// torch's CPU formulas: sigmoid 1 / (1 + exp(-z)), hardsigmoid min(max(z + 3, 0), 6) / 6 (NaN stays NaN).
inline float gate_value(float z, Gate gate) {
  if (gate == Gate::Sigmoid) return 1.f / (1.f + std::exp(-z));
  return std::isnan(z) ? z : std::min(std::max(z + 3.f, 0.f), 6.f) / 6.f;
}

class ImageRunner {
 public:
  // split_channels: the threads share each image (fewer images than threads) and split its first pass by hidden
  // channels rather than by rows (see depthwise_pass_channels).
  ImageRunner(const MBConvGeom& g, const KernelTable& k, const at::Tensor& x, at::Tensor& y, const IRWeights& w,
              const SEWeights& se, bool split_channels)
      : g_(g), k_(k), x_(x), y_(y), w_(w), se_(se), split_channels_(split_channels) {
    band_ = std::clamp<int64_t>((kMinBandPixels + g.Wo - 1) / g.Wo, 1, g.Ho);
    ring_ = (band_ - 1) * g.stride + g.k;
  }

  int64_t buffer_floats() const { return g_.Ho * g_.Wo * g_.hidden; }

  // Image n through the block, d kept in D (buffer_floats() floats). The passes use at::parallel_for, which runs
  // inline when the caller is already one of the parallel workers.
  void run(int64_t n, float* D) const {
    float* s = scratch(static_cast<size_t>(2 * g_.hidden + g_.squeeze), 3);  // gate | means | SE hidden
    if (split_channels_) {
      depthwise_pass_channels(n, D, s + g_.hidden);
    } else {
      depthwise_pass(n, D);
      at::parallel_for(0, g_.hidden, 64, [&](int64_t c0, int64_t c1) { channel_means(D, s + g_.hidden, c0, c1); });
    }
    squeeze_excite(s + g_.hidden, s + 2 * g_.hidden, s);
    project_pass(n, D, s);
  }

 private:
  // Pass 1 split by hidden channels, for an image shared by the threads: split by rows, a 7x7 or 14x14 map gives one
  // thread all or most of the rows (bands are 160 pixels), and smaller bands would make each thread expand the rows
  // around its own again. By channels, each thread expands and filters every pixel of its channels (no halo) and
  // takes their means too.
  void depthwise_pass_channels(int64_t n, float* D, float* mean) const {
    const MBConvGeom& g = g_;
    const int64_t P = k_.panel, es = x_.element_size();
    at::parallel_for(0, (g.hidden + P - 1) / P, 1, [&](int64_t begin, int64_t end) {
      const int64_t c0 = begin * P, nc = std::min(g.hidden, end * P) - c0;
      RowsIn src = image_rows(x_, n);
      src.data = static_cast<const char*>(src.data) + c0 * es;
      if (g.expand) {
        // Packed weights are panels of P output channels, so channel c0's panel starts at c0 * C.
        float* E = scratch(static_cast<size_t>(g.H * g.W * nc), 0);
        pointwise(k_, pixel_ptr(x_, n, 0), kernel_dtype(x_), g.C, g.H * g.W, g.C, w_.ew + c0 * g.C, nc,
                  w_.eb ? w_.eb + c0 : nullptr, E, DType::F32, nc, nullptr, 0, g.act);
        src = RowsIn{E, DType::F32, g.H, g.W, nc, 0};
      }
      DwRowsArgs dw{src, nc, w_.dw + c0, g.k, g.k, g.stride, g.stride, g.pad, g.pad, 1, 1,
                    w_.db ? w_.db + c0 : nullptr, RowsOut{D + c0, DType::F32, g.Wo, g.hidden}, nullptr, 0, g.act,
                    0, g.Ho};
      dw.w_ld = g.hidden;
      k_.depthwise_rows(dw);
      channel_means(D, mean, c0, c0 + nc);
    });
  }

  // Pass 1: d = act(dw(act(expand(x)))) for every output row of image n, written into D.
  void depthwise_pass(int64_t n, float* D) const {
    const MBConvGeom& g = g_;
    const DType xt = kernel_dtype(x_);
    at::parallel_for(0, (g.Ho + band_ - 1) / band_, 1, [&](int64_t b0, int64_t b1) {
      float* E = g.expand ? scratch(static_cast<size_t>(ring_ * g.W * g.hidden), 0) : nullptr;
      int64_t next_ih = 0;  // expanded rows [.., next_ih) of image n are in the ring
      bool primed = false;
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t oh0 = b * band_, oh1 = std::min(g.Ho, oh0 + band_);
        RowsIn src = image_rows(x_, n);
        if (g.expand) {
          const int64_t lo = std::max<int64_t>(0, oh0 * g.stride - g.pad);
          const int64_t hi = std::min(g.H, (oh1 - 1) * g.stride - g.pad + g.k);
          if (!primed || next_ih < lo) next_ih = lo;
          primed = true;
          while (next_ih < hi) {  // expand the missing rows, as few GEMM calls as the ring's wrap allows
            const int64_t slot = next_ih % ring_, m = std::min(hi - next_ih, ring_ - slot);
            pointwise(k_, pixel_ptr(x_, n, next_ih), xt, g.C, m * g.W, g.C, w_.ew, g.hidden, w_.eb,
                      E + slot * g.W * g.hidden, DType::F32, g.hidden, nullptr, 0, g.act);
            next_ih += m;
          }
          src = RowsIn{E, DType::F32, g.H, g.W, g.hidden, 0, ring_};
        }
        k_.depthwise_rows(DwRowsArgs{src, g.hidden, w_.dw, g.k, g.k, g.stride, g.stride, g.pad, g.pad, 1, 1, w_.db,
                                     RowsOut{D + oh0 * g.Wo * g.hidden, DType::F32, g.Wo, g.hidden}, nullptr, 0,
                                     g.act, oh0, oh1});
      }
    });
  }

  // Means of channels [c0, c1) of D, each summed over the pixels in one order, whoever computes it.
  void channel_means(const float* D, float* mean, int64_t c0, int64_t c1) const {
    const int64_t C = g_.hidden, P = g_.Ho * g_.Wo;
    std::fill(mean + c0, mean + c1, 0.f);
    for (int64_t p = 0; p < P; ++p) {
      const float* row = D + p * C;
      for (int64_t c = c0; c < c1; ++c) mean[c] += row[c];
    }
    const float inv = 1.f / static_cast<float>(P);
    for (int64_t c = c0; c < c1; ++c) mean[c] *= inv;
  }

  // gate[c] = gate(expand(se_act(reduce(mean)))): two one-pixel GEMMs through the same microkernel.
  void squeeze_excite(const float* mean, float* hidden, float* gate) const {
    const MBConvGeom& g = g_;
    pointwise(k_, mean, DType::F32, g.hidden, 1, g.hidden, se_.rw, g.squeeze, se_.rb, hidden, DType::F32, g.squeeze,
              nullptr, 0, g.se_act);
    pointwise(k_, hidden, DType::F32, g.squeeze, 1, g.squeeze, se_.ew, g.hidden, se_.eb, gate, DType::F32, g.hidden,
              nullptr, 0, Activation::None);
    for (int64_t c = 0; c < g.hidden; ++c) gate[c] = gate_value(gate[c], g.gate);
  }

  // Pass 2: y = project(d * gate) (+ x), a band of pixels at a time so the scaled band is still in L1/L2 for the GEMM.
  void project_pass(int64_t n, float* D, const float* gate) const {
    const MBConvGeom& g = g_;
    const int64_t es = x_.element_size(), C = g.hidden;
    char* out = static_cast<char*>(image_out(y_, n, 0).data);
    const char* res = static_cast<const char*>(pixel_ptr(x_, n, 0));
    at::parallel_for(0, g.Ho * g.Wo, kMinBandPixels, [&](int64_t p0, int64_t p1) {
      for (int64_t q0 = p0; q0 < p1; q0 += kMinBandPixels) {
        const int64_t q1 = std::min(p1, q0 + kMinBandPixels);
        float* band = D + q0 * C;
        for (int64_t p = 0; p < q1 - q0; ++p) {
          float* row = band + p * C;
          for (int64_t c = 0; c < C; ++c) row[c] *= gate[c];
        }
        pointwise(k_, band, DType::F32, C, q1 - q0, C, w_.pw, g.Cout, w_.pb, out + q0 * g.Cout * es,
                  kernel_dtype(y_), g.Cout, g.residual ? res + q0 * g.C * es : nullptr, g.C, Activation::None);
      }
    });
  }

  const MBConvGeom& g_;
  const KernelTable& k_;
  const at::Tensor& x_;
  at::Tensor& y_;
  const IRWeights& w_;
  const SEWeights& se_;
  const bool split_channels_;
  int64_t band_, ring_;
};

// The channel split needs each thread's expanded channels of a whole image in its own buffer: only for maps small
// enough that this stays in L2 (larger maps have enough rows to split by rows without imbalance).
bool use_channel_split(const MBConvGeom& g, int64_t threads) {
  return threads > 1 && g.N < threads && g.H * g.W * g.hidden * 4 / threads <= kSplitExpandBytes;
}

IRGeom as_inverted_residual(const MBConvGeom& m) {
  IRGeom g{};
  g.N = m.N; g.C = m.C; g.H = m.H; g.W = m.W; g.hidden = m.hidden;
  g.kH = g.kW = m.k; g.stride = m.stride; g.pH = g.pW = m.pad;
  g.Ho = m.Ho; g.Wo = m.Wo; g.Cout = m.Cout;
  g.expand = m.expand; g.residual = m.residual; g.act = m.act;
  return g;
}

at::Tensor mbconv_reference_fp64(const MBConvGeom& g, const at::Tensor& input,
                                 const c10::optional<at::Tensor>& expand_weight,
                                 const c10::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                                 const at::Tensor& dw_bias, const c10::optional<at::Tensor>& se_rw,
                                 const c10::optional<at::Tensor>& se_rb, const c10::optional<at::Tensor>& se_ew,
                                 const c10::optional<at::Tensor>& se_eb, const at::Tensor& project_weight,
                                 const at::Tensor& project_bias) {
  at::Tensor h = input;
  if (g.expand) h = activation_reference(at::conv2d(h, *expand_weight, expand_bias), g.act);
  h = activation_reference(at::conv2d(h, dw_weight, dw_bias, {g.stride, g.stride}, {g.pad, g.pad}, {1, 1}, g.hidden),
                           g.act);
  if (g.se()) {
    at::Tensor s = activation_reference(at::conv2d(h.mean({2, 3}, true), *se_rw, se_rb), g.se_act);
    s = at::conv2d(s, *se_ew, se_eb);
    s = g.gate == Gate::Sigmoid ? at::sigmoid(s) : at::hardsigmoid(s);
    h = h * s;
  }
  h = at::conv2d(h, project_weight, project_bias);
  if (g.residual) h = h + input;
  return h;
}

at::Tensor mbconv_cpu(const at::Tensor& input, const c10::optional<at::Tensor>& expand_weight,
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
  if (input.scalar_type() == at::kDouble) {  // fp64 exists for gradcheck; ATen computes it
    return in_format(mbconv_reference_fp64(g, input, expand_weight, expand_bias, dw_weight, dw_bias, se_reduce_weight,
                                           se_reduce_bias, se_expand_weight, se_expand_bias, project_weight,
                                           project_bias),
                     fmt);
  }
  at::Tensor y = at::empty({g.N, g.Cout, g.Ho, g.Wo}, input.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const PackedBlockWeights pw(expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias);
  const IRWeights w = pw.ptrs();
  if (!g.se()) {
    run_inverted_residual(as_inverted_residual(g), x, y, w);
    return in_format(y, fmt);
  }
  const auto& k = kernels();
  const at::Tensor rw = packed_conv_weight(*se_reduce_weight, 1, k.panel), rb = float_bias(se_reduce_bias);
  const at::Tensor sew = packed_conv_weight(*se_expand_weight, 1, k.panel), seb = float_bias(se_expand_bias);
  const SEWeights se{rw.const_data_ptr<float>(), rb.const_data_ptr<float>(), sew.const_data_ptr<float>(),
                     seb.const_data_ptr<float>()};
  const int64_t threads = at::get_num_threads();
  const ImageRunner runner(g, k, x, y, w, se, use_channel_split(g, threads));
  const auto floats = static_cast<size_t>(runner.buffer_floats());
  if (g.N >= threads) {
    at::parallel_for(0, g.N, 1, [&](int64_t n0, int64_t n1) {
      float* D = scratch(floats, 2);
      for (int64_t n = n0; n < n1; ++n) runner.run(n, D);
    });
  } else {
    float* D = scratch(floats, 2);  // the caller's, shared with the workers of each pass
    for (int64_t n = 0; n < g.N; ++n) runner.run(n, D);
  }
  return in_format(y, fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnkernels, CPU, m) {
  m.impl("mbconv", &mbconv_cpu);
}

}  // namespace cnnkernels::cpu
