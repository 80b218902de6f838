#pragma once
// Weights re-laid-out for the kernels, cached per weight tensor so a model pays for packing once, not per call.
// An entry is keyed by the weight's storage, offset, sizes and strides, and is repacked when the tensor's version
// counter moves (optimizer steps and load_state_dict write in place and bump it). Entries refer to the storage weakly:
// freeing a weight frees its memory, and its entry (with the packed copy) is dropped at a later insertion or size();
// the weak reference keeps the storage object's address from being reused by another tensor and mistaken for it.
#include <ATen/core/Tensor.h>

namespace cnnkernels::cpu {

// [Cout, Cin/groups, kH, kW] -> fp32 [groups][panels][kH][kW][Cin/groups][panel], zero-padded to whole panels.
at::Tensor packed_conv_weight(const at::Tensor& weight, int64_t groups, int64_t panel);

// Depthwise [C, 1, kH, kW] -> fp32 [kH*kW][C].
at::Tensor packed_depthwise_weight(const at::Tensor& weight);

// Entries currently cached whose weight is alive (for tests and cnnkernels.info).
int64_t weight_cache_size();
void weight_cache_clear();

}  // namespace cnnkernels::cpu
