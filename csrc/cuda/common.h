#pragma once
// Helpers shared by the CUDA op wrappers (torch side). With CNNKERNELS_EMULATE (csrc/cuda/emu/) the same wrappers are
// built for the host: the kernels run emulated on CPU threads and the ops register as cnnkernels_emu::<op> for CPU
// tensors.
#include <ATen/core/Tensor.h>  // not ATen/ATen.h: the wrappers need Tensor methods and at::empty only (2.5x faster)
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include "common/checks.h"
#include "cpu/weight_cache.h"
#include "cuda/kernels.h"

#if defined(CNNKERNELS_EMULATE)
#define CNNKERNELS_IMPL_NS cnnkernels_emu
#define CNNKERNELS_IMPL_KEY CPU
#else
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define CNNKERNELS_IMPL_NS cnnkernels
#define CNNKERNELS_IMPL_KEY CUDA
#endif

namespace cnnkernels::cuda {

static_assert(static_cast<int>(Act::None) == static_cast<int>(Activation::None) &&
                  static_cast<int>(Act::ReLU) == static_cast<int>(Activation::ReLU) &&
                  static_cast<int>(Act::ReLU6) == static_cast<int>(Activation::ReLU6) &&
                  static_cast<int>(Act::SiLU) == static_cast<int>(Activation::SiLU) &&
                  static_cast<int>(Act::HardSwish) == static_cast<int>(Activation::HardSwish),
              "cuda::Act must mirror cnnkernels::Activation");
static_assert(static_cast<int>(Gate::Sigmoid) == static_cast<int>(cnnkernels::Gate::Sigmoid) &&
                  static_cast<int>(Gate::HardSigmoid) == static_cast<int>(cnnkernels::Gate::HardSigmoid),
              "cuda::Gate must mirror cnnkernels::Gate");
inline Act to_act(Activation a) { return static_cast<Act>(static_cast<int>(a)); }
inline Gate to_gate(cnnkernels::Gate g) { return static_cast<Gate>(static_cast<int>(g)); }

#if defined(CNNKERNELS_EMULATE)
struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};
inline cudaStream_t current_stream() { return nullptr; }
inline const char* error_string(cudaError_t) { return "emulated kernel fault (see stderr)"; }
#else
using DeviceGuard = c10::cuda::CUDAGuard;
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream(); }
inline const char* error_string(cudaError_t e) { return cudaGetErrorString(e); }
#endif

inline DType cuda_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::F32;
    case at::kBFloat16: return DType::BF16;
    case at::kHalf: return DType::F16;
    case at::kDouble: return DType::F64;
    default: TORCH_CHECK_TYPE(false, "cnnkernels: no CUDA kernel for dtype ", t.scalar_type());
  }
}

inline void check_launch(cudaError_t err, const char* op) {
  // The launchers return cudaErrorInvalidConfiguration themselves when no launch plan exists (tiling.h).
  TORCH_CHECK(err == cudaSuccess, "cnnkernels.", op, ": CUDA kernel launch failed: ", error_string(err),
              err == cudaErrorInvalidConfiguration
                  ? " (no launch plan: a GEMM K or a grid of output tiles of 2**31 or more, an inverted residual "
                    "output 2**31 rows high or wide, or a tile needing more shared memory than the device gives a block)"
                  : "");
}

// The kernels accumulate in fp32 (fp64 for fp64 tensors); biases and depthwise weights are passed in that type.
inline at::ScalarType acc_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// The packings of the CUDA kernels go through the CPU library's cache with Trust::FrozenOnly: only weights marked
// frozen (cnnkernels.optimize(freeze=True), weight_cache_freeze) are kept, and reused while their version counters are
// unchanged; any other weight is packed on every call (proving device data unchanged would need the host to wait for
// the device). Stream safety: a new entry is complete before the call returns (the current stream is synchronised,
// once per weight), so any stream may read it later; a hit from a stream other than the one the entry was allocated
// on is recorded with the caching allocator, so evicting the entry cannot hand its memory to another allocation
// while that stream still reads it. Under CUDA graph capture the cache is bypassed: the graph packs for itself,
// and holds no pointer into an entry that a later eviction could free.
enum CudaPacking : int { kGemmWeight = 10, kDepthwiseWeight = 11, kAccVector = 12, kUp2x2Weight = 13 };

inline at::Tensor cached(at::TensorList sources, CudaPacking kind, c10::ArrayRef<int64_t> params,
                         const std::function<at::Tensor()>& pack) {
#if !defined(CNNKERNELS_EMULATE)
  if (c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None) return pack();
#endif
  const cpu::Packed p = cpu::cached_packing(sources, kind, params, cpu::Trust::FrozenOnly, pack);
#if !defined(CNNKERNELS_EMULATE)
  if (p.fresh && p.cached) {
    C10_CUDA_CHECK(cudaStreamSynchronize(current_stream()));
  } else if (!p.fresh) {
    c10::cuda::CUDACachingAllocator::recordStream(p.tensor.storage().data_ptr(), c10::cuda::getCurrentCUDAStream());
  }
#endif
  return p.tensor;
}

// Vectors (biases, SE weights) in the accumulation type, contiguous; the concatenation of `parts` when there are
// several (inception's fused 1x1 GEMM).
inline at::Tensor acc_vector(at::TensorList parts) {
  if (parts.size() == 1 && parts[0].scalar_type() == acc_type(parts[0]) && parts[0].is_contiguous()) return parts[0];
  return cached(parts, kAccVector, {}, [&] {
    const at::Tensor v = parts.size() == 1 ? parts[0] : at::cat(parts, 0);
    return v.detach().to(acc_type(v)).contiguous();
  });
}

inline at::Tensor acc_vector(const at::Tensor& v) { return acc_vector(at::TensorList(v)); }

inline at::Tensor acc_vector(const c10::optional<at::Tensor>& v) { return v.has_value() ? acc_vector(*v) : at::Tensor(); }

inline const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr() : nullptr; }

// Weight re-layout for the GEMM kernels: [C_out, Cg, kH, kW] -> [groups][kH][kW][Cg][C_out / groups], the K-major
// layout whose rows the kernels stream into shared memory. Several weights (same Cg and window) are concatenated
// along C_out first.
inline at::Tensor pack_gemm_weight(at::TensorList ws, int64_t groups) {
  return cached(ws, kGemmWeight, {groups}, [&] {
    const at::Tensor w = ws.size() == 1 ? ws[0] : at::cat(ws, 0);
    const int64_t Cout = w.size(0), Cg = w.size(1), kH = w.size(2), kW = w.size(3);
    return w.detach().reshape({groups, Cout / groups, Cg, kH, kW}).permute({0, 3, 4, 2, 1}).contiguous();
  });
}

// Depthwise weight [C, 1, kH, kW] -> [kH * kW][C] in the accumulation type (a warp reads consecutive channels).
inline at::Tensor pack_depthwise_weight(const at::Tensor& w) {
  return cached(w, kDepthwiseWeight, {}, [&] {
    return w.detach().reshape({w.size(0), w.size(2) * w.size(3)}).t().to(acc_type(w)).contiguous();
  });
}

// A 2x2 stride-2 transposed conv weight [Cin, Cup, 2, 2] -> [2][2][Cin][Cup] in the accumulation type.
inline at::Tensor pack_up2x2_weight(const at::Tensor& w) {
  return cached(w, kUp2x2Weight, {}, [&] { return w.detach().permute({2, 3, 0, 1}).to(acc_type(w)).contiguous(); });
}

// ConvGemmArgs for an NHWC input (pixels g.C elements apart) and the window of `g`; the GEMM operands, epilogue and
// outputs are the caller's.
inline ConvGemmArgs conv_args(const at::Tensor& nhwc, const ConvGeom& g) {
  // Stride, padding and dilation are capped at 2**31 - 1 by the op checks; a kernel size is not (the weight bounds it).
  TORCH_CHECK(g.kH <= INT32_MAX && g.kW <= INT32_MAX, "cnnkernels: the CUDA kernels take kernel sizes below 2**31, got ",
              g.kH, " x ", g.kW);
  ConvGemmArgs a;
  a.x = nhwc.const_data_ptr();
  a.N = g.N; a.H = g.H; a.W = g.W; a.ldx = g.C; a.Ho = g.Ho; a.Wo = g.Wo;
  a.kH = static_cast<int>(g.kH); a.kW = static_cast<int>(g.kW);
  a.sH = static_cast<int>(g.sH); a.sW = static_cast<int>(g.sW);
  a.pH = static_cast<int>(g.pH); a.pW = static_cast<int>(g.pW);
  a.dH = static_cast<int>(g.dH); a.dW = static_cast<int>(g.dW);
  return a;
}

// The kernels write NHWC: a channels_last tensor (pixel stride = channels).
inline at::Tensor empty_nhwc(c10::IntArrayRef nchw, const at::TensorOptions& opts) {
  return at::empty(nchw, opts.memory_format(at::MemoryFormat::ChannelsLast));
}

// The caller's layout for the result (the CPU kernels' rule): channels_last stays, anything else gets a copy.
inline at::Tensor in_format(const at::Tensor& nhwc, at::MemoryFormat fmt) {
  return fmt == at::MemoryFormat::ChannelsLast ? nhwc : nhwc.contiguous(fmt);
}

}  // namespace cnnkernels::cuda
