#pragma once
// Weights re-laid-out for the kernels, cached so a model pays for packing once, not per call.
//
// A hit requires proof that the weight's bytes are unchanged: a 64-bit fingerprint of the data is compared on every
// call (one read of the weight, no write, no allocation). Version counters alone are not enough: writes through
// `.data`, numpy views, or a compiled graph reusing a buffer for a new weight do not bump them. Entries hold the
// weight's storage weakly, so the cache never keeps a freed weight alive; it is bounded by entries and bytes.
// The CUDA kernels use the same cache through cached_packing with Trust::FrozenOnly (csrc/cuda/common.h).
#include <ATen/core/Tensor.h>

#include <functional>

namespace cnnkernels::cpu {

// How a cached packing is proven current.
enum class Trust {
  // CPU tensors: the fingerprint of the data (or, for frozen storages, the version counter).
  Fingerprint,
  // Any device: only frozen storages are cached, on their version counters; anything else is packed on every call
  // and nothing is kept. For device tensors, whose fingerprint would make the host wait for the device on each call.
  FrozenOnly,
};

struct Packed {
  at::Tensor tensor;
  bool fresh;   // pack() ran in this call
  bool cached;  // the tensor is (now) held by the cache, for later calls
};

// The generic entry point: pack()'s result, cached under the tensors it reads (`sources`, e.g. the weights a GEMM
// concatenates; an entry is reused only while every one of them is unchanged), a `kind` naming the layout, and the
// `params` the layout depends on. Kinds are the callers' (the CPU packings below use 0-9, the CUDA ones 10-19).
Packed cached_packing(at::TensorList sources, int kind, c10::ArrayRef<int64_t> params, Trust trust,
                      const std::function<at::Tensor()>& pack);

// [Cout, Cin/groups, kH, kW] -> fp32 [groups][panels][kH][kW][Cin/groups][panel], zero-padded to whole panels.
at::Tensor packed_conv_weight(const at::Tensor& weight, int64_t groups, int64_t panel);

// Depthwise [C, 1, kH, kW] -> fp32 [kH*kW][C].
at::Tensor packed_depthwise_weight(const at::Tensor& weight);

// Input channels [c0, c1) of a conv weight (groups 1), packed as packed_conv_weight packs weight.narrow(1, c0, c1 - c0)
// but cached under the whole weight, whose data is fingerprinted in place (a narrowed view would be copied to be).
at::Tensor packed_conv_weight_channels(const at::Tensor& weight, int64_t c0, int64_t c1, int64_t panel);

// A 2x2 stride-2 transposed conv weight [Cin, Cout, 2, 2] -> fp32 [2][2][panels][Cin][panel]: per output phase (p, q),
// the 1x1 conv weight of that tap, laid out as packed_conv_weight lays out [Cout, Cin, 1, 1].
at::Tensor packed_up2x2_weight(const at::Tensor& weight, int64_t panel);

// Cached entries whose weight is still alive (for tests and cnnkernels.info).
int64_t weight_cache_size();
// Clears every entry and every freeze.
void weight_cache_clear();

// Marks a weight's storage frozen (cnnkernels.optimize(freeze=True)): its cache hits then trust the version counter
// instead of fingerprinting the data, as torch.compile's freezing trusts weights not to change. Writes that bypass the
// version counter (`.data`, NumPy views) are not seen for frozen weights until weight_cache_clear().
void weight_cache_freeze(c10::StorageImpl* storage);
int64_t weight_cache_frozen_count();

}  // namespace cnnkernels::cpu
