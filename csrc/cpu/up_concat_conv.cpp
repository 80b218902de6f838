// up_concat_conv: act(conv3x3(cat([skip, conv_transpose2x2_s2(input)]))), the U-Net up-path step, without writing the
// upsampled or the concatenated tensor to memory.
//
// Kernel 2 = stride 2 makes every upsampled pixel (2y+p, 2x+q) a 1x1 product of input pixel (y, x) with the (p, q)
// tap, so the upsampled rows of a band are four GEMMs (one per tap) over the input rows below them. Each thread walks
// its output rows in bands and keeps a ring of concatenated rows (skip channels first, then the upsampled ones, fp32)
// just large enough for a band plus the 3x3 conv's two halo rows: every concatenated row is built once per thread
// (the halo rows at the ends of a thread's range are built by both neighbours), and the existing 3x3 conv
// microkernel reads the ring directly, bias and activation in its epilogue. Every value is summed in the same order whatever the band and thread split, so the
// result does not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <type_traits>

#include "common/op_checks.h"
#include "cpu/common.h"
#include "cpu/stages.h"
#include "cpu/weight_cache.h"

namespace cnnkernels::cpu {

namespace {

// The ring per thread: half of a 2 MB L2, so that the 3x3 weight panels and the input rows fit beside it; bands of
// several rows let each weight panel serve many pixels per pass over the weights.
constexpr int64_t kRingBytes = 1024 * 1024;

// From this many concatenated channels on, an fp32 output's 3x3 conv runs as two convolutions, over the skip channels
// and over the upsampled ones, the second adding the first's fp32 partial sums in its epilogue (conv_rows' residual,
// which has the output's type: hence fp32 only). A weight panel then covers half the channels: at 1024 channels a
// 32-wide panel of all of them is 1.2 MB, which does not stay in a 2 MB L2 beside the ring (the split measured 1.1x
// faster on a 1024 -> 512 3x3 conv at 32x32 here, one thread, on a busy machine); at 512 it gained nothing.
constexpr int64_t kSplitChannels = 768;

at::Tensor up_concat_conv_fp64(const at::Tensor& input, const at::Tensor& skip, const at::Tensor& up_weight,
                               const c10::optional<at::Tensor>& up_bias, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias, Activation act) {
  const at::Tensor up = at::conv_transpose2d(input, up_weight, up_bias, {2, 2});
  const at::Tensor y = at::conv2d(at::cat({skip, up}, 1), weight, bias, {1, 1}, {1, 1});
  return in_format(activation_reference(y, act), output_memory_format(input));
}

// npix pixels of C channels (kernel dtype t, pixel stride C) into fp32 with pixel stride ld.
void widen_pixels(const void* src, DType t, int64_t npix, int64_t C, float* dst, int64_t ld) {
  auto copy = [&](auto tag) {
    using T = decltype(tag);
    const T* s = static_cast<const T*>(src);
    for (int64_t p = 0; p < npix; ++p, s += C, dst += ld) {
      if constexpr (std::is_same_v<T, float>) {
        std::memcpy(dst, s, C * sizeof(float));
      } else {
        for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<float>(s[c]);
      }
    }
  };
  switch (t) {
    case DType::F32: copy(float{}); return;
    case DType::BF16: copy(c10::BFloat16{}); return;
    case DType::F16: copy(c10::Half{}); return;
  }
}

at::Tensor up_concat_conv_cpu(const at::Tensor& input, const at::Tensor& skip, const at::Tensor& up_weight,
                              const c10::optional<at::Tensor>& up_bias, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias, c10::string_view activation) {
  const UpConcatGeom g = check_up_concat_conv(input, skip, up_weight, up_bias, weight, bias, activation);
  const auto fmt = output_memory_format(input);
  if (input.scalar_type() == at::kDouble) return up_concat_conv_fp64(input, skip, up_weight, up_bias, weight, bias, g.act);
  const int64_t Ho = 2 * g.H, Wo = 2 * g.W, Ct = g.Ctot();
  at::Tensor y = at::empty({g.N, g.Cout, Ho, Wo}, input.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor s = skip.contiguous(at::MemoryFormat::ChannelsLast);
  const auto& k = kernels();
  const at::Tensor up_w = packed_up2x2_weight(up_weight, k.panel);
  const bool split = Ct >= kSplitChannels && y.scalar_type() == at::kFloat;
  const at::Tensor w = split ? packed_conv_weight_channels(weight, 0, g.Cskip, k.panel)
                             : packed_conv_weight(weight, 1, k.panel);
  const at::Tensor w_up = split ? packed_conv_weight_channels(weight, g.Cskip, Ct, k.panel) : at::Tensor();
  const at::Tensor up_b = float_bias(up_bias), b = float_bias(bias);
  const int64_t up_phase = (g.Cup + k.panel - 1) / k.panel * g.C * k.panel;  // packed floats per (p, q) tap
  const DType xt = kernel_dtype(x);
  const int64_t band = std::clamp<int64_t>(kRingBytes / (Wo * Ct * 4) - 2, 1, Ho);
  const int64_t ring = band + 2;
  at::parallel_for(0, g.N * Ho, 1, [&](int64_t begin, int64_t end) {
    float* buf = scratch(static_cast<size_t>(ring * Wo * Ct), 0);
    float* up = scratch(static_cast<size_t>((ring + 1) / 2 * g.W * g.Cup), 1);
    float* part = split ? scratch(static_cast<size_t>(band * Wo * g.Cout), 2) : nullptr;  // the skip channels' sums
    int64_t image = -1, built = 0;  // the ring holds concatenated rows [built - ring, built) of `image`
    // Concatenated rows [h0, h1) of image n into their ring slots: the skip rows widened, then per phase (p, q) one
    // GEMM over every input row whose upsampled row 2y + p is among them (more pixels per pass over that tap's
    // weights than row by row), scattered to the upsampled pixels (2y + p, 2x + q).
    auto build_rows = [&](int64_t n, int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h) widen_pixels(pixel_ptr(s, n, h), xt, Wo, g.Cskip, buf + (h % ring) * Wo * Ct, Ct);
      for (int64_t p = 0; p < 2; ++p) {
        const int64_t y0 = (h0 - p + 1) / 2, y1 = (h1 - p + 1) / 2;  // h0 <= 2y + p < h1
        if (y0 >= y1) continue;
        for (int64_t q = 0; q < 2; ++q) {
          pointwise(k, pixel_ptr(x, n, y0), xt, g.C, (y1 - y0) * g.W, g.C,
                    up_w.const_data_ptr<float>() + (2 * p + q) * up_phase, g.Cup, ptr_or_null(up_b), up, DType::F32,
                    g.Cup, nullptr, 0, Activation::None);
          for (int64_t y = y0; y < y1; ++y) {
            float* dst = buf + ((2 * y + p) % ring) * Wo * Ct + q * Ct + g.Cskip;
            const float* src = up + (y - y0) * g.W * g.Cup;
            for (int64_t xx = 0; xx < g.W; ++xx) std::memcpy(dst + 2 * xx * Ct, src + xx * g.Cup, g.Cup * sizeof(float));
          }
        }
      }
    };
    for (int64_t r = begin; r < end;) {
      const int64_t n = r / Ho, oh0 = r % Ho, oh1 = std::min({Ho, oh0 + (end - r), oh0 + band});
      if (n != image) {
        image = n;
        built = std::max<int64_t>(0, oh0 - 1);
      }
      // Rows [oh0 - 1, oh1] feed this band; the ring's oldest row, built - ring, is at most oh0 - 2.
      const int64_t last = std::min(Ho, oh1 + 1);
      if (built < last) build_rows(n, built, last);
      built = std::max(built, last);
      const RowsIn ring_rows{buf, DType::F32, Ho, Wo, Ct, 0, ring};
      if (!split) {
        k.conv_rows(ConvRowsArgs{ring_rows, Ct, w.const_data_ptr<float>(), g.Cout, 3, 3, 1, 1, 1, 1, 1, 1,
                                 ptr_or_null(b), image_out(y, n, oh0), nullptr, 0, g.act, oh0, oh1});
      } else {
        k.conv_rows(ConvRowsArgs{ring_rows, g.Cskip, w.const_data_ptr<float>(), g.Cout, 3, 3, 1, 1, 1, 1, 1, 1,
                                 ptr_or_null(b), RowsOut{part, DType::F32, Wo, g.Cout}, nullptr, 0, Activation::None,
                                 oh0, oh1});
        RowsIn up_rows = ring_rows;
        up_rows.data = buf + g.Cskip;
        k.conv_rows(ConvRowsArgs{up_rows, g.Cup, w_up.const_data_ptr<float>(), g.Cout, 3, 3, 1, 1, 1, 1, 1, 1, nullptr,
                                 image_out(y, n, oh0), part, g.Cout, g.act, oh0, oh1});
      }
      r += oh1 - oh0;
    }
  });
  return in_format(y, fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnkernels, CPU, m) {
  m.impl("up_concat_conv", &up_concat_conv_cpu);
}

}  // namespace cnnkernels::cpu
