#pragma once
// The inverted-residual pipeline (expand, depthwise, project, residual), shared by the inverted_residual op and by
// mbconv, whose blocks without a squeeze-and-excitation stage are exactly an inverted residual.
#include <ATen/core/Tensor.h>

#include "common/op_checks.h"

namespace cnnkernels::cpu {

// The most one thread's expanded channels of one image may take when the threads of a block split an image by hidden
// channels instead of by rows (inverted_residual and mbconv at batch 1 on small maps): it must stay in L2.
constexpr int64_t kSplitExpandBytes = 384 * 1024;

// Packed fp32 weights as the kernels read them; ew/eb null without an expansion stage.
struct IRWeights {
  const float *ew, *eb, *dw, *db, *pw, *pb;
};

// Packs (through the weight cache) and keeps alive the weights of one block.
struct PackedBlockWeights {
  at::Tensor ew, eb, dw, db, pw, pb;
  PackedBlockWeights(const c10::optional<at::Tensor>& expand_weight, const c10::optional<at::Tensor>& expand_bias,
                     const at::Tensor& dw_weight, const at::Tensor& dw_bias, const at::Tensor& project_weight,
                     const at::Tensor& project_bias);
  IRWeights ptrs() const;
};

// y = block(x) for channels_last contiguous x and y (fp32/fp16/bf16; y allocated, non-empty).
void run_inverted_residual(const IRGeom& g, const at::Tensor& x, at::Tensor& y, const IRWeights& w);

}  // namespace cnnkernels::cpu
