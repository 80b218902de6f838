// inception_block: the GoogLeNet module. Every branch writes straight into its channel slice of the NHWC output (the
// kernels take the output's pixel stride), so there is no concat pass. Phase 1 runs the three 1x1 convs that read the
// input (branch 1 into the output, the two reductions into fp32 scratch) and the 3x3 max pool + 1x1 of branch 4 over
// each thread's pixels; phase 2 runs the two KxK convs over the reduced scratch into their output slices.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/op_checks.h"
#include "cpu/common.h"
#include "cpu/stages.h"
#include "cpu/weight_cache.h"

namespace cnnkernels::cpu {

namespace {

constexpr int64_t kPoolBandBytes = 128 * 1024;

at::Tensor branch_fp64(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return at::relu(at::conv2d(x, w, b, {1, 1}, {w.size(2) / 2, w.size(3) / 2}));
}

at::Tensor inception_block_cpu(const at::Tensor& input, const at::Tensor& w1, const at::Tensor& b1,
                               const at::Tensor& w2_reduce, const at::Tensor& b2_reduce, const at::Tensor& w2,
                               const at::Tensor& b2, const at::Tensor& w3_reduce, const at::Tensor& b3_reduce,
                               const at::Tensor& w3, const at::Tensor& b3, const at::Tensor& w4,
                               const at::Tensor& b4) {
  const IncGeom g = check_inception(input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce, w3, b3, w4, b4);
  const auto fmt = output_memory_format(input);
  if (input.scalar_type() == at::kDouble) {  // fp64 exists for gradcheck; ATen computes it
    return in_format(at::cat({branch_fp64(input, w1, b1), branch_fp64(branch_fp64(input, w2_reduce, b2_reduce), w2, b2),
                    branch_fp64(branch_fp64(input, w3_reduce, b3_reduce), w3, b3),
                    branch_fp64(at::max_pool2d(input, {3, 3}, {1, 1}, {1, 1}), w4, b4)},
                   1),
                     fmt);
  }
  const int64_t Ct = g.Ctot();
  at::Tensor y = at::empty({g.N, Ct, g.H, g.W}, input.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const auto& k = kernels();
  const int64_t P = k.panel;
  const at::Tensor pw1 = packed_conv_weight(w1, 1, P), pw2r = packed_conv_weight(w2_reduce, 1, P),
                   pw2 = packed_conv_weight(w2, 1, P), pw3r = packed_conv_weight(w3_reduce, 1, P),
                   pw3 = packed_conv_weight(w3, 1, P), pw4 = packed_conv_weight(w4, 1, P);
  const at::Tensor fb1 = float_bias(b1), fb2r = float_bias(b2_reduce), fb2 = float_bias(b2),
                   fb3r = float_bias(b3_reduce), fb3 = float_bias(b3), fb4 = float_bias(b4);
  const at::Tensor r2 = at::empty({g.N, g.H, g.W, g.c2r}, x.options().dtype(at::kFloat));
  const at::Tensor r3 = at::empty({g.N, g.H, g.W, g.c3r}, x.options().dtype(at::kFloat));
  float* r2p = r2.data_ptr<float>();
  float* r3p = r3.data_ptr<float>();
  const DType xt = kernel_dtype(x);
  const int64_t es = y.element_size(), HW = g.H * g.W;
  auto out_px = [&](int64_t pix, int64_t c0) { return static_cast<char*>(y.data_ptr()) + (pix * Ct + c0) * es; };
  const int64_t pool_band = std::clamp<int64_t>(kPoolBandBytes / (g.W * g.C * 4), 1, g.H);

  // Phase 1 splits pixels, not rows, so 7x7 maps divide evenly between threads (4/3 rows would not). Branch 4 pools
  // the rows its pixels lie in (a row shared with the next thread is pooled by both) and runs its 1x1 on its pixels.
  at::parallel_for(0, g.N * HW, 1, [&](int64_t begin, int64_t end) {
    float* pooled = scratch(static_cast<size_t>(pool_band * g.W * g.C), 0);
    for (int64_t q = begin; q < end;) {
      const int64_t n = q / HW, q0 = q % HW, q1 = std::min(HW, q0 + (end - q)), npix = q1 - q0;
      const int64_t pix0 = n * HW + q0;
      const void* xp = static_cast<const char*>(x.const_data_ptr()) + pix0 * g.C * x.element_size();
      pointwise(k, xp, xt, g.C, npix, g.C, pw1.const_data_ptr<float>(), g.c1, fb1.const_data_ptr<float>(),
                out_px(pix0, 0), xt, Ct, nullptr, 0, Activation::ReLU);
      pointwise(k, xp, xt, g.C, npix, g.C, pw2r.const_data_ptr<float>(), g.c2r, fb2r.const_data_ptr<float>(),
                r2p + pix0 * g.c2r, DType::F32, g.c2r, nullptr, 0, Activation::ReLU);
      pointwise(k, xp, xt, g.C, npix, g.C, pw3r.const_data_ptr<float>(), g.c3r, fb3r.const_data_ptr<float>(),
                r3p + pix0 * g.c3r, DType::F32, g.c3r, nullptr, 0, Activation::ReLU);
      for (int64_t b0 = q0 / g.W, h_end = (q1 - 1) / g.W + 1; b0 < h_end; b0 += pool_band) {
        const int64_t b1_ = std::min(h_end, b0 + pool_band);
        k.maxpool3x3_rows(MaxPoolRowsArgs{image_rows(x, n), g.C, RowsOut{pooled, DType::F32, g.W, g.C}, b0, b1_});
        const int64_t s0 = std::max(q0, b0 * g.W), s1 = std::min(q1, b1_ * g.W);
        pointwise(k, pooled + (s0 - b0 * g.W) * g.C, DType::F32, g.C, s1 - s0, g.C, pw4.const_data_ptr<float>(),
                  g.c4, fb4.const_data_ptr<float>(), out_px(n * HW + s0, g.c1 + g.c2 + g.c3), xt, Ct, nullptr, 0,
                  Activation::ReLU);
      }
      q += npix;
    }
  });

  // Phase 2: the two KxK convs over the reduced scratch, by output rows. With few rows per thread (7x7 at batch 1)
  // each branch's output channels are also split into `split` blocks, interleaved so that every thread gets a share
  // of both branches.
  const int64_t rows = g.N * g.H;
  const int64_t split = std::clamp<int64_t>((4 * at::get_num_threads() + rows - 1) / rows, 1, 8);
  auto branch = [&](int which, int64_t blk, int64_t n, int64_t h0, int64_t h1) {
    const float* red = which == 0 ? r2p : r3p;
    const int64_t cr = which == 0 ? g.c2r : g.c3r, cout = which == 0 ? g.c2 : g.c3;
    const at::Tensor& w = which == 0 ? w2 : w3;
    const at::Tensor& pw = which == 0 ? pw2 : pw3;
    const at::Tensor& b = which == 0 ? fb2 : fb3;
    const int64_t kH = w.size(2), kW = w.size(3);
    const int64_t panels = (cout + P - 1) / P, per = (panels + split - 1) / split;
    const int64_t p0 = blk * per, p1 = std::min(panels, p0 + per);
    if (p0 >= p1) return;
    const int64_t o0 = p0 * P, nc = std::min(cout, p1 * P) - o0;
    const int64_t c0 = (which == 0 ? g.c1 : g.c1 + g.c2) + o0;
    k.conv_rows(ConvRowsArgs{RowsIn{red + n * HW * cr, DType::F32, g.H, g.W, cr, 0}, cr,
                             pw.const_data_ptr<float>() + p0 * kH * kW * cr * P, nc, kH, kW, 1, 1, kH / 2, kW / 2, 1,
                             1, b.const_data_ptr<float>() + o0, RowsOut{out_px(n * HW + h0 * g.W, c0), xt, g.W, Ct},
                             nullptr, 0, Activation::ReLU, h0, h1});
  };
  const int64_t cols = split == 1 ? 1 : 2 * split;
  at::parallel_for(0, cols * rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end;) {
      const int64_t col = t / rows, r = t % rows;
      const int64_t n = r / g.H, h0 = r % g.H, h1 = std::min(g.H, h0 + (end - t));
      if (split == 1) {
        branch(0, 0, n, h0, h1);
        branch(1, 0, n, h0, h1);
      } else {
        branch(static_cast<int>(col % 2), col / 2, n, h0, h1);
      }
      t += h1 - h0;
    }
  });
  return in_format(y, fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnkernels, CPU, m) {
  m.impl("inception_block", &inception_block_cpu);
}

}  // namespace cnnkernels::cpu
