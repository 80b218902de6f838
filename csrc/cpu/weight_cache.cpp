#include "cpu/weight_cache.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <list>
#include <mutex>
#include <unordered_map>

#include "cpu/kernels/kernel_table.h"

namespace cnnkernels::cpu {

namespace {

// One tensor a packing reads: where it lives and how it is viewed.
struct SourceKey {
  const void* storage;
  int64_t offset;
  std::vector<int64_t> sizes, strides;
  int dtype;
  bool operator==(const SourceKey& o) const {
    return storage == o.storage && offset == o.offset && sizes == o.sizes && strides == o.strides && dtype == o.dtype;
  }
};

struct Key {
  std::vector<SourceKey> sources;
  int kind;
  std::vector<int64_t> params;  // what else the layout depends on (groups, panel, channel range)
  bool operator==(const Key& o) const { return sources == o.sources && kind == o.kind && params == o.params; }
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    size_t h = std::hash<int>()(k.kind);
    auto mix = [&h](int64_t v) { h ^= std::hash<int64_t>()(v) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
    for (const auto& s : k.sources) {
      mix(reinterpret_cast<intptr_t>(s.storage)); mix(s.offset); mix(s.dtype);
      for (auto v : s.sizes) mix(v);
    }
    for (auto v : k.params) mix(v);
    return h;
  }
};

using WeakTensorImpl = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
using WeakStorage = c10::weak_intrusive_ptr<c10::StorageImpl>;

// What a hit must find unchanged in one source.
struct SourceState {
  WeakStorage storage;  // expired => the tensor was freed; its address may be reused
  // The tensor whose data last matched, and its version counter then (-1: an inference tensor, which has none). A
  // version-counter hit must come from that same tensor: another tensor on the storage (`w.data`) has a counter of
  // its own that says nothing about writes through w.
  WeakTensorImpl verified;
  int64_t version;
};

struct Entry {
  std::vector<SourceState> sources;
  uint64_t fingerprint;  // of every source's data (Trust::Fingerprint entries only)
  at::Tensor packed;
  std::list<Key>::iterator lru;
};

// Bounded so a process that creates many models, or packs weights computed afresh each call, cannot grow without limit.
constexpr size_t kMaxEntries = 1024;
constexpr int64_t kMaxBytes = int64_t(1) << 30;

std::mutex mu;
// Storages of frozen weights (weight_cache_freeze): for them an unchanged version counter is taken as proof that the
// data is unchanged, and the fingerprint is skipped. The weak reference keeps the address from being reused.
std::unordered_map<const c10::StorageImpl*, WeakStorage> frozen;
std::list<Key> lru;  // most recently used at the front
std::unordered_map<Key, Entry, KeyHash> cache;
int64_t cached_bytes = 0;

void erase(std::unordered_map<Key, Entry, KeyHash>::iterator it) {
  cached_bytes -= it->second.packed.nbytes();
  lru.erase(it->second.lru);
  cache.erase(it);
}

// Large weights are fingerprinted in chunks on all threads (the chunk fingerprints are then combined in order).
uint64_t fingerprint_of(const at::Tensor& w) {
  // A dense tensor in any layout (channels_last weights included) spans exactly nbytes from its data pointer; the
  // strides are part of the cache key.
  const at::Tensor c = w.is_non_overlapping_and_dense() ? w : w.contiguous();
  const auto* p = static_cast<const char*>(c.const_data_ptr());
  const int64_t n = c.nbytes();
  constexpr int64_t kChunk = 256 * 1024;
  const auto& k = kernels();
  if (n <= 4 * kChunk) return k.fingerprint(p, n);
  std::vector<uint64_t> parts((n + kChunk - 1) / kChunk);
  at::parallel_for(0, static_cast<int64_t>(parts.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) parts[i] = k.fingerprint(p + i * kChunk, std::min(kChunk, n - i * kChunk));
  });
  return k.fingerprint(parts.data(), static_cast<int64_t>(parts.size() * sizeof(uint64_t)));
}

uint64_t fingerprint_of(at::TensorList sources) {
  if (sources.size() == 1) return fingerprint_of(sources[0]);
  std::vector<uint64_t> parts;
  for (const auto& s : sources) parts.push_back(fingerprint_of(s));
  return kernels().fingerprint(parts.data(), static_cast<int64_t>(parts.size() * sizeof(uint64_t)));
}

int64_t version_of(const at::Tensor& t) { return t.is_inference() ? -1 : static_cast<int64_t>(t._version()); }

// Whether every source is frozen and has a version counter (mu held).
bool all_frozen(at::TensorList sources) {
  for (const auto& s : sources) {
    auto f = frozen.find(s.storage().unsafeGetStorageImpl());
    if (version_of(s) < 0 || f == frozen.end() || f->second.expired()) return false;
  }
  return true;
}

// A hit on version counters: every source is the tensor last verified, unchanged since (mu held).
bool versions_match(const Entry& e, at::TensorList sources) {
  for (size_t i = 0; i < sources.size(); ++i) {
    const SourceState& st = e.sources[i];
    if (st.storage.expired() || st.verified.expired() ||
        st.verified._unsafe_get_target() != sources[i].unsafeGetTensorImpl() || st.version != version_of(sources[i]))
      return false;
  }
  return true;
}

bool storages_alive(const Entry& e) {
  for (const auto& st : e.sources)
    if (st.storage.expired()) return false;
  return true;
}

std::vector<SourceState> states_of(at::TensorList sources) {
  std::vector<SourceState> v;
  for (const auto& s : sources)
    v.push_back(SourceState{WeakStorage(s.storage().getWeakStorageImpl()), WeakTensorImpl(s.getIntrusivePtr()),
                            version_of(s)});
  return v;
}

}  // namespace

Packed cached_packing(at::TensorList sources, int kind, c10::ArrayRef<int64_t> params, Trust trust,
                      const std::function<at::Tensor()>& pack) {
  TORCH_INTERNAL_ASSERT(!sources.empty());
  for (const auto& s : sources)
    TORCH_INTERNAL_ASSERT(trust == Trust::FrozenOnly || s.device().is_cpu(), "fingerprints read host memory only");
  Key key{{}, kind, params.vec()};
  for (const auto& s : sources)
    key.sources.push_back(SourceKey{s.storage().unsafeGetStorageImpl(), s.storage_offset(), s.sizes().vec(),
                                    s.strides().vec(), static_cast<int>(s.scalar_type())});
  bool trusted;
  {
    std::lock_guard<std::mutex> g(mu);
    trusted = all_frozen(sources);
    if (trusted) {
      auto it = cache.find(key);
      if (it != cache.end() && versions_match(it->second, sources)) {
        lru.splice(lru.begin(), lru, it->second.lru);
        return Packed{it->second.packed, false, true};
      }
    }
  }
  // Nothing to prove the data unchanged with: pack (outside the lock, like every packing), keep nothing.
  if (!trusted && trust == Trust::FrozenOnly) return Packed{pack(), true, false};
  uint64_t fp = 0;
  if (trust == Trust::Fingerprint) {
    fp = fingerprint_of(sources);
    std::lock_guard<std::mutex> g(mu);
    auto it = cache.find(key);
    if (it != cache.end()) {
      if (storages_alive(it->second) && it->second.fingerprint == fp) {
        it->second.sources = states_of(sources);
        lru.splice(lru.begin(), lru, it->second.lru);
        return Packed{it->second.packed, false, true};
      }
      erase(it);  // changed contents, or a new tensor at a freed weight's address
    }
  }
  at::Tensor packed = pack();  // outside the lock: packing a large weight must not stall other threads
  std::lock_guard<std::mutex> g(mu);
  if (auto it = cache.find(key); it != cache.end()) erase(it);  // another thread packed it meanwhile, or stale
  // Misses are rare in steady state, so this is where entries of freed weights are dropped.
  for (auto it = cache.begin(); it != cache.end();) {
    auto next = std::next(it);
    if (!storages_alive(it->second)) erase(it);
    it = next;
  }
  lru.push_front(key);
  cache.emplace(key, Entry{states_of(sources), fp, packed, lru.begin()});
  cached_bytes += packed.nbytes();
  while (cache.size() > kMaxEntries || (cached_bytes > kMaxBytes && cache.size() > 1)) erase(cache.find(lru.back()));
  return Packed{packed, true, true};
}

namespace {

template <typename Pack>
at::Tensor cached(const at::Tensor& w, int kind, std::initializer_list<int64_t> params, Pack&& pack) {
  return cached_packing({w}, kind, params, Trust::Fingerprint, pack).tensor;
}

// [Cout, Cin/groups, kH, kW] -> fp32 [groups][panels][kH][kW][Cin/groups][panel] (packed_conv_weight's layout).
at::Tensor packed_layout(const at::Tensor& weight, int64_t groups, int64_t panel) {
  const int64_t Cout = weight.size(0), Cin = weight.size(1), kH = weight.size(2), kW = weight.size(3);
  const int64_t Cg = Cout / groups, panels = (Cg + panel - 1) / panel;
  // [G, Cg, Cin, kH, kW] -> [G, Cg_padded, kH, kW, Cin] -> [G, panels, panel, kH, kW, Cin] -> [G, panels, kH, kW, Cin, panel]
  at::Tensor w = weight.detach().to(at::kFloat).reshape({groups, Cg, Cin, kH, kW}).permute({0, 1, 3, 4, 2});
  if (panels * panel != Cg) w = at::constant_pad_nd(w, {0, 0, 0, 0, 0, 0, 0, panels * panel - Cg});
  return w.reshape({groups, panels, panel, kH, kW, Cin}).permute({0, 1, 3, 4, 5, 2}).contiguous();
}

}  // namespace

at::Tensor packed_conv_weight(const at::Tensor& weight, int64_t groups, int64_t panel) {
  return cached(weight, 0, {groups, panel}, [&] { return packed_layout(weight, groups, panel); });
}

at::Tensor packed_depthwise_weight(const at::Tensor& weight) {
  return cached(weight, 1, {}, [&] {
    const int64_t C = weight.size(0);
    return weight.detach().to(at::kFloat).reshape({C, -1}).t().contiguous();
  });
}

at::Tensor packed_conv_weight_channels(const at::Tensor& weight, int64_t c0, int64_t c1, int64_t panel) {
  return cached(weight, 3, {panel, c0, c1}, [&] {
    return packed_layout(weight.detach().narrow(1, c0, c1 - c0), 1, panel);
  });
}

at::Tensor packed_up2x2_weight(const at::Tensor& weight, int64_t panel) {
  return cached(weight, 2, {panel}, [&] {
    const int64_t Cin = weight.size(0), Cout = weight.size(1), panels = (Cout + panel - 1) / panel;
    // [Cin, Cout, 2, 2] -> [2, 2, Cout_padded, Cin] -> [4, panels, panel, Cin] -> [4, panels, Cin, panel]
    at::Tensor w = weight.detach().to(at::kFloat).permute({2, 3, 1, 0});
    if (panels * panel != Cout) w = at::constant_pad_nd(w, {0, 0, 0, panels * panel - Cout});
    return w.reshape({4, panels, panel, Cin}).permute({0, 1, 3, 2}).contiguous();
  });
}

int64_t weight_cache_size() {
  // Live entries only: those of freed weights are unusable and are dropped at the next insertion anyway.
  std::lock_guard<std::mutex> g(mu);
  int64_t live = 0;
  for (const auto& kv : cache) live += storages_alive(kv.second);
  return live;
}

void weight_cache_freeze(c10::StorageImpl* storage) {
  std::lock_guard<std::mutex> g(mu);
  for (auto it = frozen.begin(); it != frozen.end();) it = it->second.expired() ? frozen.erase(it) : std::next(it);
  // The caller holds a tensor on this storage, so it is alive: take a (counted) reference to make the weak one from.
  auto strong = c10::intrusive_ptr<c10::StorageImpl>::unsafe_reclaim_from_nonowning(storage);
  frozen.insert_or_assign(storage, c10::weak_intrusive_ptr<c10::StorageImpl>(strong));
}

int64_t weight_cache_frozen_count() {
  std::lock_guard<std::mutex> g(mu);
  int64_t live = 0;
  for (const auto& kv : frozen) live += !kv.second.expired();
  return live;
}

void weight_cache_clear() {
  std::lock_guard<std::mutex> g(mu);
  frozen.clear();
  cache.clear();
  lru.clear();
  cached_bytes = 0;
}

}  // namespace cnnkernels::cpu

extern "C" __attribute__((visibility("default"))) int64_t cnnkernels_weight_cache_size() {
  return cnnkernels::cpu::weight_cache_size();
}
extern "C" __attribute__((visibility("default"))) int64_t cnnkernels_weight_cache_capacity() {
  return static_cast<int64_t>(cnnkernels::cpu::kMaxEntries);
}
extern "C" __attribute__((visibility("default"))) void cnnkernels_weight_cache_freeze(void* storage_impl) {
  cnnkernels::cpu::weight_cache_freeze(static_cast<c10::StorageImpl*>(storage_impl));
}
extern "C" __attribute__((visibility("default"))) int64_t cnnkernels_weight_cache_frozen_count() {
  return cnnkernels::cpu::weight_cache_frozen_count();
}
extern "C" __attribute__((visibility("default"))) void cnnkernels_weight_cache_clear() {
  cnnkernels::cpu::weight_cache_clear();
}
