// CUDA registration of inception_block: validation, weight packing, allocation, device guard and stream. Four launches
// on the current stream, each writing its channel slice of the NHWC output (no concatenation):
//   1. one GEMM for the three 1x1 convs that read the input: branch 1 -> output[:, 0:c1], the two reductions -> scratch
//   2. 3x3 max pool + 1x1 (branch 4) -> output[:, c1+c2+c3:]
//   3. KxK conv of the branch-2 reduction -> output[:, c1:c1+c2]
//   4. KxK conv of the branch-3 reduction -> output[:, c1+c2:c1+c2+c3]
// The reductions go through global scratch in the input dtype (what an unfused fp16 network stores as well).
#include <torch/library.h>

#include "common/op_checks.h"
#include "cuda/common.h"

namespace cnnkernels::cuda {

namespace {

// A stride-1 "same" conv + bias + ReLU over an NHWC tensor with `ld` elements per pixel.
ConvGemmArgs same_conv(const at::Tensor& src, int64_t N, int64_t H, int64_t W, int64_t ld, int64_t cin,
                       const at::Tensor& packed, int64_t cout, int kH, int kW, const at::Tensor& bias) {
  ConvGemmArgs a;
  a.x = src.const_data_ptr();
  a.N = N; a.H = H; a.W = W; a.ldx = ld; a.Ho = H; a.Wo = W;
  a.kH = kH; a.kW = kW; a.pH = kH / 2; a.pW = kW / 2;
  a.Cg = cin;
  a.Cog = cout;
  a.w = packed.const_data_ptr();
  a.bias = bias.const_data_ptr();
  a.act = Act::ReLU;
  return a;
}

at::Tensor inception_block_cuda(const at::Tensor& input, const at::Tensor& w1, const at::Tensor& b1,
                                const at::Tensor& w2_reduce, const at::Tensor& b2_reduce, const at::Tensor& w2,
                                const at::Tensor& b2, const at::Tensor& w3_reduce, const at::Tensor& b3_reduce,
                                const at::Tensor& w3, const at::Tensor& b3, const at::Tensor& w4,
                                const at::Tensor& b4) {
  const IncGeom g = check_inception(input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce, w3, b3, w4, b4);
  const auto fmt = output_memory_format(input);
  const DeviceGuard guard(input.device());
  const int64_t Ct = g.Ctot();
  at::Tensor y = empty_nhwc({g.N, Ct, g.H, g.W}, input.options());
  if (y.numel() == 0) return in_format(y, fmt);
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  const DType t = cuda_dtype(x);
  const cudaStream_t stream = current_stream();
  char* yp = static_cast<char*>(y.data_ptr());
  const int64_t es = y.element_size();

  // 1. the three 1x1 convs of the input as one GEMM, columns routed to three destinations
  const int64_t n1 = g.c1 + g.c2r + g.c3r;
  const at::Tensor w1x1 = pack_gemm_weight({w1, w2_reduce, w3_reduce}, 1);
  const at::Tensor b1x1 = acc_vector({b1, b2_reduce, b3_reduce});
  const at::Tensor r2 = at::empty({g.N, g.H, g.W, g.c2r}, x.options());
  const at::Tensor r3 = at::empty({g.N, g.H, g.W, g.c3r}, x.options());
  ConvGemmArgs a = same_conv(x, g.N, g.H, g.W, g.C, g.C, w1x1, n1, 1, 1, b1x1);
  a.nslices = 3;
  a.out[0] = OutSlice{yp, Ct, g.c1};
  a.out[1] = OutSlice{r2.data_ptr(), g.c2r, g.c1 + g.c2r};
  a.out[2] = OutSlice{r3.data_ptr(), g.c3r, n1};
  check_launch(launch_conv_gemm(t, a, stream), "inception_block");

  // 2. branch 4: pool + 1x1
  const at::Tensor w4p = pack_gemm_weight(w4, 1), b4a = acc_vector(b4);
  a = same_conv(x, g.N, g.H, g.W, g.C, g.C, w4p, g.c4, 1, 1, b4a);
  a.out[0] = OutSlice{yp + (g.c1 + g.c2 + g.c3) * es, Ct, g.c4};
  check_launch(launch_pool_conv(t, a, stream), "inception_block");

  // 3, 4. the KxK convs of the reductions
  const at::Tensor w2p = pack_gemm_weight(w2, 1), b2a = acc_vector(b2);
  a = same_conv(r2, g.N, g.H, g.W, g.c2r, g.c2r, w2p, g.c2, static_cast<int>(w2.size(2)), static_cast<int>(w2.size(3)),
                b2a);
  a.out[0] = OutSlice{yp + g.c1 * es, Ct, g.c2};
  check_launch(launch_conv_gemm(t, a, stream), "inception_block");

  const at::Tensor w3p = pack_gemm_weight(w3, 1), b3a = acc_vector(b3);
  a = same_conv(r3, g.N, g.H, g.W, g.c3r, g.c3r, w3p, g.c3, static_cast<int>(w3.size(2)), static_cast<int>(w3.size(3)),
                b3a);
  a.out[0] = OutSlice{yp + (g.c1 + g.c2) * es, Ct, g.c3};
  check_launch(launch_conv_gemm(t, a, stream), "inception_block");
  return in_format(y, fmt);
}

}  // namespace

TORCH_LIBRARY_IMPL(CNNKERNELS_IMPL_NS, CNNKERNELS_IMPL_KEY, m) {
  m.impl("inception_block", &inception_block_cuda);
}

}  // namespace cnnkernels::cuda
