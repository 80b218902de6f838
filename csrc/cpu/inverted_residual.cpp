// inverted_residual: the MobileNet-v2 bottleneck (1x1 expand + act, depthwise KxK + act, linear 1x1 project, + input)
// in one pass. Each task walks its output rows in bands: the expanded rows a band needs are computed into a per-thread
// ring buffer (rows shared with the previous band are kept, not recomputed), the depthwise band goes to a second small
// buffer, and the projection writes the output with the residual added in its epilogue. The 6x-expanded activation
// never leaves L2.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/op_checks.h"
#include "cpu/common.h"
#include "cpu/inverted_residual.h"
#include "cpu/stages.h"
#include "cpu/weight_cache.h"

namespace cnnkernels::cpu {

namespace {

constexpr int64_t kMinBandPixels = 160;         // projection GEMM rows per call (small maps batch several rows)
constexpr int64_t kBandBytes = 256 * 1024;      // depthwise band buffer per thread

// Row bands (the default): each thread walks its own output rows, so the expanded rows live in a small per-thread
// ring and the whole block is one pass over memory.
void run_row_bands(const IRGeom& g, const KernelTable& k, const at::Tensor& x, at::Tensor& y, const IRWeights& w) {
  const DType xt = kernel_dtype(x);
  int64_t band = std::clamp<int64_t>((kMinBandPixels + g.Wo - 1) / g.Wo, 1, g.Ho);
  band = std::max<int64_t>(1, std::min(band, kBandBytes / (g.Wo * g.hidden * 4)));
  const int64_t ring = (band - 1) * g.stride + g.kH;  // input rows one band reads: consecutive, so distinct mod ring

  at::parallel_for(0, g.N * g.Ho, 1, [&](int64_t begin, int64_t end) {
    float* E = g.expand ? scratch(static_cast<size_t>(ring * g.W * g.hidden), 0) : nullptr;
    float* D = scratch(static_cast<size_t>(band * g.Wo * g.hidden), 1);
    int64_t cur_n = -1, next_ih = 0;  // expanded rows [.., next_ih) of image cur_n are in the ring
    for (int64_t r = begin; r < end;) {
      const int64_t n = r / g.Ho, oh0 = r % g.Ho, oh1 = std::min({g.Ho, oh0 + (end - r), oh0 + band});
      RowsIn src = image_rows(x, n);
      if (g.expand) {
        const int64_t lo = std::max<int64_t>(0, oh0 * g.stride - g.pH);
        const int64_t hi = std::min(g.H, (oh1 - 1) * g.stride - g.pH + g.kH);
        if (n != cur_n || next_ih < lo) next_ih = lo;
        cur_n = n;
        while (next_ih < hi) {  // expand the missing rows, as few GEMM calls as the ring's wrap allows
          const int64_t slot = next_ih % ring, m = std::min(hi - next_ih, ring - slot);
          pointwise(k, pixel_ptr(x, n, next_ih), xt, g.C, m * g.W, g.C, w.ew, g.hidden, w.eb,
                    E + slot * g.W * g.hidden, DType::F32, g.hidden, nullptr, 0, g.act);
          next_ih += m;
        }
        src = RowsIn{E, DType::F32, g.H, g.W, g.hidden, 0, ring};
      }
      k.depthwise_rows(DwRowsArgs{src, g.hidden, w.dw, g.kH, g.kW, g.stride, g.stride, g.pH, g.pW, 1, 1, w.db,
                                  RowsOut{D, DType::F32, g.Wo, g.hidden}, nullptr, 0, g.act, oh0, oh1});
      const RowsOut out = image_out(y, n, oh0);
      pointwise(k, D, DType::F32, g.hidden, (oh1 - oh0) * g.Wo, g.hidden, w.pw, g.Cout, w.pb, out.data, out.type,
                g.Cout, g.residual ? pixel_ptr(x, n, oh0) : nullptr, g.C, Activation::None);
      r += oh1 - oh0;
    }
  });
}

// Few output rows per thread (7x7 maps at batch 1): two threads taking 4 and 3 of 7 rows also both expand the rows
// between them, so one does about 30% more work than the other. There the block runs in two phases. The threads first
// split the hidden channels, each expanding and depthwise-filtering every pixel of its channels (no halo, no
// imbalance) into one shared buffer (at most kSplitBytes, so it stays in cache); then they split the pixels for the
// projection. Measured at 2 threads: MobileNet v2's 7x7 blocks 5-10% faster; 14x14 ones were not, so they keep bands.
constexpr int64_t kSplitBytes = 1 << 20;          // the shared depthwise output

bool use_channel_split(const IRGeom& g, int64_t threads) {
  const int64_t E = g.H * g.W * g.hidden * 4 / std::max<int64_t>(threads, 1);
  return threads > 1 && g.N * g.Ho <= 4 * threads && g.N * g.Ho * g.Wo * g.hidden * 4 <= kSplitBytes &&
         E <= kSplitExpandBytes;
}

void run_channel_split(const IRGeom& g, const KernelTable& k, const at::Tensor& x, at::Tensor& y, const IRWeights& w) {
  const DType xt = kernel_dtype(x);
  const int64_t es = x.element_size(), P = k.panel;
  const int64_t pixels = g.N * g.Ho * g.Wo;
  float* D = scratch(static_cast<size_t>(pixels * g.hidden), 2);  // this thread's buffer, shared with the workers
  at::parallel_for(0, (g.hidden + P - 1) / P, 1, [&](int64_t begin, int64_t end) {
    const int64_t c0 = begin * P, nc = std::min(g.hidden, end * P) - c0;
    float* E = g.expand ? scratch(static_cast<size_t>(g.H * g.W * nc), 0) : nullptr;
    for (int64_t n = 0; n < g.N; ++n) {
      RowsIn src = image_rows(x, n);
      src.data = static_cast<const char*>(src.data) + c0 * es;
      if (g.expand) {
        pointwise(k, pixel_ptr(x, n, 0), xt, g.C, g.H * g.W, g.C, w.ew + c0 * g.C, nc, w.eb ? w.eb + c0 : nullptr,
                  E, DType::F32, nc, nullptr, 0, g.act);
        src = RowsIn{E, DType::F32, g.H, g.W, nc, 0};
      }
      DwRowsArgs dw{src, nc, w.dw + c0, g.kH, g.kW, g.stride, g.stride, g.pH, g.pW, 1, 1, w.db ? w.db + c0 : nullptr,
                    RowsOut{D + n * g.Ho * g.Wo * g.hidden + c0, DType::F32, g.Wo, g.hidden}, nullptr, 0, g.act,
                    0, g.Ho};
      dw.w_ld = g.hidden;
      k.depthwise_rows(dw);
    }
  });
  // The images are contiguous in NHWC, so the projection is one GEMM over all their pixels.
  char* out = static_cast<char*>(y.data_ptr());
  const char* res = static_cast<const char*>(x.const_data_ptr());
  at::parallel_for(0, pixels, 1, [&](int64_t p0, int64_t p1) {
    pointwise(k, D + p0 * g.hidden, DType::F32, g.hidden, p1 - p0, g.hidden, w.pw, g.Cout, w.pb,
              out + p0 * g.Cout * es, kernel_dtype(y), g.Cout, g.residual ? res + p0 * g.C * es : nullptr, g.C,
              Activation::None);
  });
}

at::Tensor inverted_residual_cpu(const at::Tensor& input, const c10::optional<at::Tensor>& expand_weight,
                                 const c10::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                                 const at::Tensor& dw_bias, const at::Tensor& project_weight,
                                 const at::Tensor& project_bias, int64_t stride, bool residual,
                                 c10::string_view activation) {
  const IRGeom g = check_inverted_residual(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                                           project_bias, stride, residual, activation);
  const auto fmt = output_memory_format(input);
  if (input.scalar_type() == at::kDouble) {  // fp64 exists for gradcheck; ATen computes it
    at::Tensor h = input;
    if (g.expand) h = activation_reference(at::conv2d(h, *expand_weight, expand_bias), g.act);
    h = activation_reference(at::conv2d(h, dw_weight, dw_bias, {g.stride, g.stride}, {g.pH, g.pW}, {1, 1}, g.hidden),
                             g.act);
    h = at::conv2d(h, project_weight, project_bias);
    if (g.residual) h = h + input;
    return in_format(h, fmt);
  }
  at::Tensor y = at::empty({g.N, g.Cout, g.Ho, g.Wo}, input.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const PackedBlockWeights w(expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias);
  run_inverted_residual(g, x, y, w.ptrs());
  return in_format(y, fmt);
}

}  // namespace

PackedBlockWeights::PackedBlockWeights(const c10::optional<at::Tensor>& expand_weight,
                                       const c10::optional<at::Tensor>& expand_bias, const at::Tensor& dw_weight,
                                       const at::Tensor& dw_bias, const at::Tensor& project_weight,
                                       const at::Tensor& project_bias) {
  const int64_t panel = kernels().panel;
  if (expand_weight.has_value()) {
    ew = packed_conv_weight(*expand_weight, 1, panel);
    eb = float_bias(expand_bias);
  }
  dw = packed_depthwise_weight(dw_weight);
  db = float_bias(dw_bias);
  pw = packed_conv_weight(project_weight, 1, panel);
  pb = float_bias(project_bias);
}

IRWeights PackedBlockWeights::ptrs() const {
  return IRWeights{ew.defined() ? ew.const_data_ptr<float>() : nullptr, ptr_or_null(eb), dw.const_data_ptr<float>(),
                   ptr_or_null(db), pw.const_data_ptr<float>(), ptr_or_null(pb)};
}

void run_inverted_residual(const IRGeom& g, const at::Tensor& x, at::Tensor& y, const IRWeights& w) {
  const auto& k = kernels();
  if (use_channel_split(g, at::get_num_threads())) {
    run_channel_split(g, k, x, y, w);
  } else {
    run_row_bands(g, k, x, y, w);
  }
}

TORCH_LIBRARY_IMPL(cnnkernels, CPU, m) {
  m.impl("inverted_residual", &inverted_residual_cpu);
}

}  // namespace cnnkernels::cpu
