#include "cpu/weight_cache.h"

#include <ATen/ATen.h>

#include <list>
#include <mutex>
#include <unordered_map>

namespace cnnkernels::cpu {

namespace {

struct Key {
  const void* storage;
  int64_t offset;
  std::vector<int64_t> sizes, strides;
  int dtype;
  int kind;
  int64_t groups, panel;
  bool operator==(const Key& o) const {
    return storage == o.storage && offset == o.offset && sizes == o.sizes && strides == o.strides &&
           dtype == o.dtype && kind == o.kind && groups == o.groups && panel == o.panel;
  }
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = std::hash<const void*>()(k.storage);
    auto mix = [&h](int64_t v) { h ^= std::hash<int64_t>()(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
    mix(k.offset); mix(k.dtype); mix(k.kind); mix(k.groups); mix(k.panel);
    for (auto s : k.sizes) mix(s);
    return h;
  }
};

struct Entry {
  // Weak, so that freeing a weight releases its memory. The StorageImpl object itself stays allocated while this
  // reference exists (only its data is freed), so its address, the key, cannot be reused by another storage and
  // mistaken for it.
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  uint32_t version;
  at::Tensor packed;
};

// Bounded so a long-running process that creates many models does not grow without limit.
constexpr size_t kMaxEntries = 4096;

std::mutex mu;
std::list<Key> lru;  // most recently used at the front
std::unordered_map<Key, std::pair<Entry, std::list<Key>::iterator>, KeyHash> cache;
size_t inserts_since_sweep = 0;

// Drops the entries whose weight has been freed, and with them their packed copies. `mu` must be held.
void sweep_locked() {
  for (auto it = cache.begin(); it != cache.end();) {
    if (it->second.first.storage.expired()) {
      lru.erase(it->second.second);
      it = cache.erase(it);
    } else {
      ++it;
    }
  }
  inserts_since_sweep = 0;
}

template <typename Pack>
at::Tensor cached(const at::Tensor& w, int kind, int64_t groups, int64_t panel, Pack&& pack) {
  // Inference tensors carry no version counter, so an in-place update could not be detected: never cache them.
  if (w.is_inference()) return pack();
  Key key{w.storage().unsafeGetStorageImpl(), w.storage_offset(), w.sizes().vec(), w.strides().vec(),
          static_cast<int>(w.scalar_type()), kind, groups, panel};
  const uint32_t version = w.unsafeGetTensorImpl()->version_counter().current_version();
  {
    std::lock_guard<std::mutex> g(mu);
    auto it = cache.find(key);
    if (it != cache.end() && it->second.first.version == version) {
      lru.splice(lru.begin(), lru, it->second.second);
      return it->second.first.packed;
    }
  }
  at::Tensor packed = pack();  // outside the lock: packing a large weight must not stall other threads
  std::lock_guard<std::mutex> g(mu);
  // Sweeping costs O(entries): done once per size()/8 insertions (misses), so O(1) per insertion amortised, and a
  // freed weight's packed copy goes soon after (at once while the cache holds fewer than 8 entries).
  if (++inserts_since_sweep * 8 >= cache.size()) sweep_locked();
  auto it = cache.find(key);
  if (it != cache.end()) {
    it->second.first = Entry{w.storage().getWeakStorageImpl(), version, packed};
    lru.splice(lru.begin(), lru, it->second.second);
  } else {
    lru.push_front(key);
    cache.emplace(key, std::make_pair(Entry{w.storage().getWeakStorageImpl(), version, packed}, lru.begin()));
    while (cache.size() > kMaxEntries) {
      cache.erase(lru.back());
      lru.pop_back();
    }
  }
  return packed;
}

}  // namespace

at::Tensor packed_conv_weight(const at::Tensor& weight, int64_t groups, int64_t panel) {
  return cached(weight, 0, groups, panel, [&] {
    const int64_t Cout = weight.size(0), Cin = weight.size(1), kH = weight.size(2), kW = weight.size(3);
    const int64_t Cg = Cout / groups, panels = (Cg + panel - 1) / panel;
    // [G, Cg, Cin, kH, kW] -> [G, Cg_padded, kH, kW, Cin] -> [G, panels, panel, kH, kW, Cin] -> [G, panels, kH, kW, Cin, panel]
    at::Tensor w = weight.detach().to(at::kFloat).reshape({groups, Cg, Cin, kH, kW}).permute({0, 1, 3, 4, 2});
    if (panels * panel != Cg) w = at::constant_pad_nd(w, {0, 0, 0, 0, 0, 0, 0, panels * panel - Cg});
    return w.reshape({groups, panels, panel, kH, kW, Cin}).permute({0, 1, 3, 4, 5, 2}).contiguous();
  });
}

at::Tensor packed_depthwise_weight(const at::Tensor& weight) {
  return cached(weight, 1, 1, 0, [&] {
    const int64_t C = weight.size(0);
    return weight.detach().to(at::kFloat).reshape({C, -1}).t().contiguous();
  });
}

int64_t weight_cache_size() {
  std::lock_guard<std::mutex> g(mu);
  sweep_locked();  // count live weights only
  return static_cast<int64_t>(cache.size());
}

void weight_cache_clear() {
  std::lock_guard<std::mutex> g(mu);
  cache.clear();
  lru.clear();
}

}  // namespace cnnkernels::cpu

extern "C" __attribute__((visibility("default"))) int64_t cnnkernels_weight_cache_size() {
  return cnnkernels::cpu::weight_cache_size();
}
extern "C" __attribute__((visibility("default"))) void cnnkernels_weight_cache_clear() {
  cnnkernels::cpu::weight_cache_clear();
}
