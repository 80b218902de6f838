// CUDA registration of box_iou, nms and batched_nms: validation, the sorts and gathers (ATen on the device), the
// greedy reduction of the suppression mask (on the host); the kernels are in boxes_kernel.cu. The steps are the CPU
// op's (csrc/cpu/boxes.cpp), so the results are too: torchvision.ops' exactly.
#include <ATen/ops/from_blob.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/sort.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "common/op_checks.h"
#include "cuda/common.h"

namespace cnnkernels::cuda {

namespace {

// torchvision.ops.batched_nms runs nms per class above this many box coordinates on CUDA (the CPU's is 4000).
constexpr int64_t kPerClassNumel = 100000;

// 16-bit boxes and scores run nms in float32 (exact conversions), as the CPU op does.
at::ScalarType compute_dtype(const at::Tensor& t) {
  const auto s = t.scalar_type();
  return (s == at::kHalf || s == at::kBFloat16) ? at::kFloat : s;
}

at::Tensor long_on(const std::vector<int64_t>& v, const at::Tensor& like) {
  const at::Tensor host = at::from_blob(const_cast<int64_t*>(v.data()), {static_cast<int64_t>(v.size())},
                                        at::TensorOptions().dtype(at::kLong));
  return host.to(like.device(), at::kLong, /*non_blocking=*/false, /*copy=*/true);  // a copy: `v` dies
}

// Greedy nms over `ranked` (contiguous [n, 4], float or double, boxes in rank order) cut into independent segments
// [starts[s], starts[s + 1]): a box suppresses only boxes of its own segment. Returns the kept positions in `ranked`,
// ascending. The mask is built on the device and reduced here, one segment after the other, as the CPU's
// `suppress` walks its boxes.
std::vector<int64_t> kept_positions(const at::Tensor& ranked, const std::vector<int64_t>& starts, double thr) {
  std::vector<int64_t> offsets(starts.size(), 0);  // first mask word of each segment
  for (size_t s = 0; s + 1 < starts.size(); ++s) {
    const int64_t n = starts[s + 1] - starts[s];
    offsets[s + 1] = offsets[s] + n * ceil_div(n, kNmsBlock);
  }
  at::Tensor mask = at::empty({offsets.back()}, ranked.options().dtype(at::kLong));
  const DType t = cuda_dtype(ranked);
  const int64_t elem = ranked.element_size();
  for (size_t s = 0; s + 1 < starts.size(); ++s) {
    const auto* boxes = static_cast<const char*>(ranked.const_data_ptr()) + 4 * starts[s] * elem;
    check_launch(launch_nms_mask(t, boxes, starts[s + 1] - starts[s], thr, mask.data_ptr<int64_t>() + offsets[s],
                                 current_stream()),
                 "nms");
  }
  const at::Tensor host = mask.cpu();
  const auto* words_all = reinterpret_cast<const uint64_t*>(host.const_data_ptr<int64_t>());
  std::vector<int64_t> kept;
  std::vector<uint64_t> removed;
  for (size_t s = 0; s + 1 < starts.size(); ++s) {
    const int64_t n = starts[s + 1] - starts[s], words = ceil_div(n, kNmsBlock);
    const uint64_t* m = words_all + offsets[s];
    removed.assign(words, 0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t w = i / kNmsBlock;
      if ((removed[w] >> (i % kNmsBlock)) & 1) continue;
      kept.push_back(starts[s] + i);
      const uint64_t* row = m + i * words;
      for (int64_t c = w; c < words; ++c) removed[c] |= row[c];
    }
  }
  return kept;
}

// nms of `boxes` and `scores` in the compute dtype (no empty input): kept indices into them, by rank.
at::Tensor nms_impl(const at::Tensor& boxes, const at::Tensor& scores, double thr) {
  // torchvision's nms ranks with a stable sort (equal scores by ascending index)
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor ranked = boxes.index_select(0, order).contiguous();
  const std::vector<int64_t> kept = kept_positions(ranked, {0, boxes.size(0)}, thr);
  return order.index_select(0, long_on(kept, order));
}

at::Tensor box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_box_iou(boxes1, boxes2);
  const DeviceGuard guard(boxes1.device());
  const int64_t N = boxes1.size(0), M = boxes2.size(0);
  at::Tensor out = at::empty({N, M}, boxes1.options().dtype(compute_dtype(boxes1)));
  if (N == 0 || M == 0) return out;
  const at::Tensor a = boxes1.contiguous(), b = boxes2.contiguous();
  check_launch(launch_box_iou(cuda_dtype(a), a.const_data_ptr(), b.const_data_ptr(), out.data_ptr(), N, M,
                              current_stream()),
               "box_iou");
  return out;
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms(boxes, scores, iou_threshold);
  const DeviceGuard guard(boxes.device());
  if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const auto dt = compute_dtype(boxes);
  return nms_impl(boxes.to(dt), scores.to(dt), iou_threshold);
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor& idxs,
                            double iou_threshold) {
  check_batched_nms(boxes_in, scores_in, idxs, iou_threshold);
  const DeviceGuard guard(boxes_in.device());
  if (boxes_in.numel() == 0) return at::empty({0}, boxes_in.options().dtype(at::kLong));
  const auto dt = compute_dtype(boxes_in);
  const at::Tensor boxes = boxes_in.to(dt), scores = scores_in.to(dt);
  if (boxes.numel() <= kPerClassNumel) {
    // torchvision's coordinate trick with its ATen arithmetic (so its rounding): every class shifted by
    // idx * (max coordinate + 1), one nms.
    const at::Tensor offsets = idxs.to(dt).mul(boxes.max().add(at::ones({}, boxes.options())));
    return nms_impl(boxes.add(offsets.unsqueeze(1)), scores, iou_threshold);
  }
  // Per class, in one mask: the boxes grouped by class (ascending), each class in its own stable score order, which
  // is the order the per-class nms of the CPU op ranks that class in; every class is a segment of the mask.
  const int64_t n = boxes.size(0);
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor cls = idxs.to(at::kLong).index_select(0, order);
  const auto cls_sorted = at::sort(cls, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor grouped = order.index_select(0, std::get<1>(cls_sorted));
  const at::Tensor cls_host = std::get<0>(cls_sorted).cpu(), grouped_host = grouped.cpu();
  const int64_t* c = cls_host.const_data_ptr<int64_t>();
  std::vector<int64_t> starts;
  for (int64_t r = 0; r < n; ++r)
    if (r == 0 || c[r] != c[r - 1]) starts.push_back(r);
  starts.push_back(n);
  const std::vector<int64_t> kept = kept_positions(boxes.index_select(0, grouped).contiguous(), starts, iou_threshold);
  // The kept indices in ascending order, ranked by torch's default descending sort of their scores, as torchvision.
  std::vector<uint8_t> is_kept(n, 0);
  const int64_t* g = grouped_host.const_data_ptr<int64_t>();
  for (const int64_t r : kept) is_kept[g[r]] = 1;
  std::vector<int64_t> ascending;
  for (int64_t i = 0; i < n; ++i)
    if (is_kept[i]) ascending.push_back(i);
  const at::Tensor keep = long_on(ascending, boxes);
  const at::Tensor rank = std::get<1>(at::sort(scores.index_select(0, keep), /*dim=*/0, /*descending=*/true));
  return keep.index_select(0, rank);
}

}  // namespace

TORCH_LIBRARY_IMPL(CNNKERNELS_IMPL_NS, CNNKERNELS_IMPL_KEY, m) {
  m.impl("box_iou", &box_iou_cuda);
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
}

}  // namespace cnnkernels::cuda
