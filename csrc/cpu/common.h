#pragma once
// Helpers shared by the CPU op wrappers.
#include <ATen/ATen.h>

#include "cpu/kernels/kernel_table.h"

namespace cnnkernels::cpu {

inline DType kernel_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::F32;
    case at::kBFloat16: return DType::BF16;
    case at::kHalf: return DType::F16;
    default: TORCH_CHECK_TYPE(false, "cnnkernels: no CPU kernel for dtype ", t.scalar_type());
  }
}

// The whole image n of an NHWC (channels_last contiguous) tensor as kernel rows.
inline RowsIn image_rows(const at::Tensor& nhwc, int64_t n) {
  const int64_t C = nhwc.size(1), H = nhwc.size(2), W = nhwc.size(3);
  const auto* base = static_cast<const char*>(nhwc.const_data_ptr()) + n * H * W * C * nhwc.element_size();
  return RowsIn{base, kernel_dtype(nhwc), H, W, C, 0};
}

// Output rows starting at row oh0 of image n of an NHWC tensor, beginning at channel c0.
inline RowsOut image_out(const at::Tensor& nhwc, int64_t n, int64_t oh0, int64_t c0 = 0) {
  const int64_t C = nhwc.size(1), H = nhwc.size(2), W = nhwc.size(3);
  auto* base = static_cast<char*>(nhwc.data_ptr()) + ((n * H + oh0) * W * C + c0) * nhwc.element_size();
  return RowsOut{base, kernel_dtype(nhwc), W, C};
}

inline const void* pixel_ptr(const at::Tensor& nhwc, int64_t n, int64_t h, int64_t c0 = 0) {
  const int64_t C = nhwc.size(1), H = nhwc.size(2), W = nhwc.size(3);
  return static_cast<const char*>(nhwc.const_data_ptr()) + ((n * H + h) * W * C + c0) * nhwc.element_size();
}

// Optional bias as an fp32 contiguous tensor (undefined when absent).
inline at::Tensor float_bias(const c10::optional<at::Tensor>& b) {
  if (!b.has_value()) return at::Tensor();
  return b->detach().to(at::kFloat).contiguous();
}

inline const float* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<float>() : nullptr;
}

// `t` in memory format `fmt` with exactly the strides at::empty(..., fmt) gives, which the fake kernels predict. A
// tensor that is contiguous in both layouts (1x1 maps, empty batches) is re-strided without a copy.
inline at::Tensor in_format(const at::Tensor& t, at::MemoryFormat fmt) {
  if (!t.is_contiguous(fmt)) return t.contiguous(fmt);
  const auto sz = t.sizes();
  std::vector<int64_t> want(sz.size());
  auto dim = [&](size_t i) { return std::max<int64_t>(sz[i], 1); };
  if (fmt == at::MemoryFormat::ChannelsLast && sz.size() == 4) {
    want = {dim(1) * dim(2) * dim(3), 1, dim(1) * dim(3), dim(1)};
  } else {
    int64_t s = 1;
    for (size_t i = sz.size(); i-- > 0;) {
      want[i] = s;
      s *= dim(i);
    }
  }
  return t.strides() == c10::IntArrayRef(want) ? t : t.as_strided(sz, want);
}

// Activations for the fp64 paths (ATen-computed, used by gradcheck): NaN-propagating like the kernels.
inline at::Tensor activation_reference(const at::Tensor& y, Activation a) {
  if (a == Activation::ReLU) return at::relu(y);
  if (a == Activation::ReLU6) return at::hardtanh(y, 0, 6);
  if (a == Activation::SiLU) return at::silu(y);
  if (a == Activation::HardSwish) return at::hardswish(y);
  return y;
}

}  // namespace cnnkernels::cpu
