// box_iou, nms and batched_nms on the CPU, with torchvision.ops' exact results (cnnkernels/ops/boxes.py says which
// steps that takes: the IoU arithmetic, the float64 threshold comparison, the sorts, batched_nms's two strategies).
//
// The arithmetic must round exactly as torchvision's: this file is compiled with -ffp-contract=off (CMakeLists.txt),
// since a fused multiply-add in `area_a + area_b - w * h` would round once instead of twice.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/op_checks.h"

namespace cnnkernels::cpu {

namespace {

// torchvision.ops.batched_nms runs nms per class above this many box coordinates on the CPU (PER_CLASS_NUMEL).
constexpr int64_t kPerClassNumel = 4000;

at::Tensor box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  check_box_iou(boxes1, boxes2);
  const auto in_t = boxes1.scalar_type();
  const bool narrow = in_t == at::kHalf || in_t == at::kBFloat16;
  const int64_t N = boxes1.size(0), M = boxes2.size(0);
  at::Tensor out = at::empty({N, M}, boxes1.options().dtype(narrow ? at::kFloat : in_t));
  if (N == 0 || M == 0) return out;
  const at::Tensor a = boxes1.contiguous(), b = boxes2.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in_t, "box_iou", [&] {
    // torchvision upcasts 16-bit boxes for the areas and after the corner differences, which stay in the input dtype.
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    acc_t* po = out.data_ptr<acc_t>();
    auto area = [](const scalar_t* q) {
      return (acc_t(q[2]) - acc_t(q[0])) * (acc_t(q[3]) - acc_t(q[1]));
    };
    auto has_nan = [](const scalar_t* q) { return q[0] != q[0] || q[1] != q[1] || q[2] != q[2] || q[3] != q[3]; };
    // boxes2 as arrays, so the inner loop vectorises
    std::vector<scalar_t> soa(4 * M);
    scalar_t *bx1 = soa.data(), *by1 = bx1 + M, *bx2 = by1 + M, *by2 = bx2 + M;
    std::vector<acc_t> area2(M);
    std::vector<int64_t> nan2;
    const scalar_t* pb = b.const_data_ptr<scalar_t>();
    for (int64_t j = 0; j < M; ++j) {
      const scalar_t* q = pb + 4 * j;
      bx1[j] = q[0]; by1[j] = q[1]; bx2[j] = q[2]; by2[j] = q[3];
      area2[j] = area(q);
      if (has_nan(q)) nan2.push_back(j);
    }
    const acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
    at::parallel_for(0, N, std::max<int64_t>(1, 16384 / M), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const scalar_t* p = pa + 4 * i;
        acc_t* row = po + i * M;
        // torch.maximum / minimum / clamp propagate NaN: a NaN coordinate in either box makes the IoU NaN. Without
        // NaN the plain comparisons below give the same values (a NaN corner difference, inf - inf, comes only with
        // a box whose area is NaN), so NaN is written afterwards instead of tested in the loop.
        if (has_nan(p)) {
          std::fill(row, row + M, nan);
          continue;
        }
        const scalar_t ax1 = p[0], ay1 = p[1], ax2 = p[2], ay2 = p[3];
        const acc_t area1 = area(p);
        for (int64_t j = 0; j < M; ++j) {
          const acc_t dx = static_cast<scalar_t>(std::min(ax2, bx2[j]) - std::max(ax1, bx1[j]));
          const acc_t dy = static_cast<scalar_t>(std::min(ay2, by2[j]) - std::max(ay1, by1[j]));
          const acc_t w = dx > acc_t(0) ? dx : acc_t(0), h = dy > acc_t(0) ? dy : acc_t(0);
          const acc_t inter = w * h;
          row[j] = inter / (area1 + area2[j] - inter);
        }
        for (const int64_t j : nan2) row[j] = nan;
      }
    });
  });
  return out;
}

// Greedy suppression over boxes already in rank order (structure of arrays): removed[j] = 1 for every box j that a
// kept higher-ranked box overlaps with IoU > thr. Returns the kept ranks in `kept`.
// The inner loop has no branch (suppression is idempotent), so it vectorises; torchvision's skips removed boxes.
// The T-typed bound b with (x > b) == (double(x) > thr) for every T x, NaN included: b is the largest T <= thr, since
// for a float x above it, x >= the next float after it > thr. Keeps the suppression loop in T (no float64 lanes).
template <typename T>
T threshold_in(double thr) {
  if constexpr (std::is_same_v<T, double>) {
    return thr;
  } else {
    T b = static_cast<T>(thr);
    if (static_cast<double>(b) > thr) b = std::nextafter(b, -std::numeric_limits<T>::infinity());
    return b;
  }
}

template <typename T>
void suppress(const T* x1, const T* y1, const T* x2, const T* y2, const T* area, int64_t n, double thr_d,
              std::vector<uint8_t>& removed, std::vector<int64_t>& kept) {
  removed.assign(n, 0);
  kept.clear();
  const T thr = threshold_in<T>(thr_d);
  for (int64_t i = 0; i < n; ++i) {
    if (removed[i]) continue;
    kept.push_back(i);
    const T ix1 = x1[i], iy1 = y1[i], ix2 = x2[i], iy2 = y2[i], ia = area[i];
    uint8_t* rm = removed.data();
    for (int64_t j = i + 1; j < n; ++j) {
      // std::max / std::min as torchvision's kernel (NaN cases differ from box_iou's but give a NaN IoU either way)
      const T xx1 = std::max(ix1, x1[j]), yy1 = std::max(iy1, y1[j]);
      const T xx2 = std::min(ix2, x2[j]), yy2 = std::min(iy2, y2[j]);
      const T w = std::max(T(0), xx2 - xx1), h = std::max(T(0), yy2 - yy1);
      const T inter = w * h;
      const T ovr = inter / (ia + area[j] - inter);
      rm[j] |= static_cast<uint8_t>(ovr > thr);
    }
  }
}

// nms of `boxes` [n, 4] and `scores` [n] (contiguous, float or double): kept indices into them, by rank.
template <typename T>
at::Tensor nms_impl(const at::Tensor& boxes, const at::Tensor& scores, double thr) {
  const int64_t n = boxes.size(0);
  // torchvision's nms ranks with a stable sort (equal scores by ascending index)
  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  const int64_t* ord = order.const_data_ptr<int64_t>();
  const T* b = boxes.const_data_ptr<T>();
  std::vector<T> soa(5 * n);
  T *x1 = soa.data(), *y1 = x1 + n, *x2 = y1 + n, *y2 = x2 + n, *area = y2 + n;
  for (int64_t r = 0; r < n; ++r) {
    const T* q = b + 4 * ord[r];
    x1[r] = q[0]; y1[r] = q[1]; x2[r] = q[2]; y2[r] = q[3];
    area[r] = (q[2] - q[0]) * (q[3] - q[1]);
  }
  std::vector<uint8_t> removed;
  std::vector<int64_t> kept;
  suppress(x1, y1, x2, y2, area, n, thr, removed, kept);
  at::Tensor keep = at::empty({static_cast<int64_t>(kept.size())}, boxes.options().dtype(at::kLong));
  int64_t* k = keep.data_ptr<int64_t>();
  for (size_t r = 0; r < kept.size(); ++r) k[r] = ord[kept[r]];
  return keep;
}

// 16-bit boxes and scores run in float32 (exact conversions), as the reference does.
at::ScalarType compute_dtype(const at::Tensor& t) {
  const auto s = t.scalar_type();
  return (s == at::kHalf || s == at::kBFloat16) ? at::kFloat : s;
}

at::Tensor nms_dispatch(const at::Tensor& boxes, const at::Tensor& scores, double thr) {
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "nms", [&] { out = nms_impl<scalar_t>(boxes, scores, thr); });
  return out;
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold) {
  check_nms(boxes, scores, iou_threshold);
  if (boxes.size(0) == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const auto dt = compute_dtype(boxes);
  return nms_dispatch(boxes.to(dt).contiguous(), scores.to(dt).contiguous(), iou_threshold);
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes_in, const at::Tensor& scores_in, const at::Tensor& idxs,
                           double iou_threshold) {
  check_batched_nms(boxes_in, scores_in, idxs, iou_threshold);
  if (boxes_in.numel() == 0) return at::empty({0}, boxes_in.options().dtype(at::kLong));
  const auto dt = compute_dtype(boxes_in);
  const at::Tensor boxes = boxes_in.to(dt).contiguous(), scores = scores_in.to(dt).contiguous();
  if (boxes.numel() <= kPerClassNumel) {
    // torchvision's coordinate trick, with its ATen arithmetic (so its rounding): every class shifted by
    // idx * (max coordinate + 1), one nms.
    const at::Tensor offsets = idxs.to(dt) * (boxes.max() + at::ones({}, boxes.options()));
    return nms_dispatch((boxes + offsets.unsqueeze(1)).contiguous(), scores, iou_threshold);
  }
  // Per class: the members of each class in index order, nms of each (its own stable sort), then the kept indices in
  // ascending order ranked by torch's default descending sort of their scores, as torchvision does.
  const int64_t n = boxes.size(0);
  const at::Tensor cls = idxs.to(at::kLong).contiguous();
  const int64_t* c = cls.const_data_ptr<int64_t>();
  std::vector<int64_t> by_class(n);
  for (int64_t i = 0; i < n; ++i) by_class[i] = i;
  std::stable_sort(by_class.begin(), by_class.end(), [&](int64_t a, int64_t b) { return c[a] < c[b]; });
  std::vector<int64_t> starts;
  for (int64_t r = 0; r < n; ++r)
    if (r == 0 || c[by_class[r]] != c[by_class[r - 1]]) starts.push_back(r);
  starts.push_back(n);
  at::Tensor members_all = at::from_blob(by_class.data(), {n}, at::TensorOptions().dtype(at::kLong)).clone();
  std::vector<uint8_t> kept_mask(n, 0);
  const int64_t classes = static_cast<int64_t>(starts.size()) - 1;
  at::parallel_for(0, classes, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const at::Tensor members = members_all.slice(0, starts[k], starts[k + 1]);
      const at::Tensor keep = nms_dispatch(boxes.index_select(0, members), scores.index_select(0, members),
                                           iou_threshold);
      const int64_t* kp = keep.const_data_ptr<int64_t>();
      const int64_t* mp = members.const_data_ptr<int64_t>();
      for (int64_t r = 0; r < keep.size(0); ++r) kept_mask[mp[kp[r]]] = 1;
    }
  });
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < n; ++i)
    if (kept_mask[i]) kept.push_back(i);
  const at::Tensor keep = at::from_blob(kept.data(), {static_cast<int64_t>(kept.size())},
                                        at::TensorOptions().dtype(at::kLong)).clone();
  const at::Tensor rank = std::get<1>(at::sort(scores.index_select(0, keep), /*dim=*/0, /*descending=*/true));
  return keep.index_select(0, rank);
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnkernels, CPU, m) {
  m.impl("box_iou", &box_iou_cpu);
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
}

}  // namespace cnnkernels::cpu
