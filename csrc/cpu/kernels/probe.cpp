// The timing probe behind the per-family ISA choice (dispatch.cpp): small fixed workloads shaped like the layers the
// library spends its time in, run single-threaded through each candidate table. Compiled once, without ISA flags: it
// only calls through the tables' function pointers.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "cpu/kernels/kernel_table.h"

namespace cnnkernels::cpu {

namespace {

// Deterministic values in [-1, 1): the kernels' speed does not depend on them, but NaNs or denormals would.
void fill(std::vector<float>& v, uint32_t seed) {
  for (auto& x : v) {
    seed = seed * 1664525u + 1013904223u;
    x = static_cast<float>(seed >> 8) / static_cast<float>(1u << 23) - 1.f;
  }
}

// w[o][c][kh][kw] packed as conv_rows expects for a panel width of `panel`: [panels][kh][kw][c][panel], zero padded.
std::vector<float> pack(const std::vector<float>& w, int64_t Cout, int64_t Cin, int64_t k, int64_t panel) {
  const int64_t panels = (Cout + panel - 1) / panel;
  std::vector<float> p(panels * k * k * Cin * panel, 0.f);
  for (int64_t o = 0; o < Cout; ++o)
    for (int64_t c = 0; c < Cin; ++c)
      for (int64_t t = 0; t < k * k; ++t)
        p[(((o / panel) * k * k + t) * Cin + c) * panel + o % panel] = w[(o * Cin + c) * k * k + t];
  return p;
}

// One conv layer, 1 image, NHWC fp32, ReLU epilogue.
struct ConvCase {
  int64_t Cin, Cout, H, k, pad;
  std::vector<float> x, w, bias, y;
  std::vector<std::vector<float>> packed;  // per candidate (panel widths differ between ISA builds)

  ConvCase(int64_t cin, int64_t cout, int64_t h, int64_t kk, int64_t p)
      : Cin(cin), Cout(cout), H(h), k(kk), pad(p), x(h * h * cin), w(cout * cin * kk * kk), bias(cout),
        y(h * h * cout) {
    fill(x, 1);
    fill(w, 2);
    fill(bias, 3);
  }
  void run(const KernelTable& t, const std::vector<float>& wp) {
    t.conv_rows(ConvRowsArgs{RowsIn{x.data(), DType::F32, H, H, Cin, 0}, Cin, wp.data(), Cout, k, k, 1, 1, pad, pad,
                             1, 1, bias.data(), RowsOut{y.data(), DType::F32, H, Cout}, nullptr, 0, Activation::ReLU,
                             0, H});
  }
};

using Clock = std::chrono::steady_clock;

template <typename Run>
double seconds(Run&& run) {
  const auto t0 = Clock::now();
  run();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

void probe_family(Family family, const KernelTable* const* tables, int n, double* out) {
  // Workloads (single thread, fp32): about 0.1-0.3 ms each per AVX2/AVX-512 run on the CPUs seen so far.
  std::vector<ConvCase> convs;
  std::vector<float> a, b, c, w;
  switch (family) {
    case Family::Conv:
      // A ResNet 3x3 on a small map (K = 576) and a MobileNet v2 expansion 1x1 (K = 24, 144 channels).
      convs.emplace_back(64, 64, 14, 3, 1);
      convs.emplace_back(24, 144, 28, 1, 0);
      for (auto& cc : convs)
        for (int i = 0; i < n; ++i) cc.packed.push_back(pack(cc.w, cc.Cout, cc.Cin, cc.k, tables[i]->panel));
      break;
    case Family::Depthwise:  // MobileNet v2's 3x3 depthwise at 144 channels, 28x28
      a.resize(28 * 28 * 144);
      b.resize(28 * 28 * 144);
      w.resize(9 * 144 + 144);
      fill(a, 4);
      fill(w, 5);
      break;
    case Family::MaxPool:  // GoogLeNet's 3x3/s1 pool branch at 14x14x192
      a.resize(14 * 14 * 192);
      b.resize(14 * 14 * 192);
      fill(a, 6);
      break;
    case Family::AddReLU:  // 128 KiB per operand: cache-resident, as in a fused network's residual joins
    case Family::Fingerprint:
      a.resize(32768);
      b.resize(32768);
      c.resize(32768);
      fill(a, 7);
      fill(b, 8);
      break;
  }
  auto once = [&](int i) {
    const KernelTable& t = *tables[i];
    return seconds([&] {
      switch (family) {
        case Family::Conv:
          for (auto& cc : convs) cc.run(t, cc.packed[i]);
          break;
        case Family::Depthwise:
          t.depthwise_rows(DwRowsArgs{RowsIn{a.data(), DType::F32, 28, 28, 144, 0}, 144, w.data(), 3, 3, 1, 1, 1, 1,
                                      1, 1, w.data() + 9 * 144, RowsOut{b.data(), DType::F32, 28, 144}, nullptr, 0,
                                      Activation::ReLU6, 0, 28});
          break;
        case Family::MaxPool:
          t.maxpool3x3_rows(MaxPoolRowsArgs{RowsIn{a.data(), DType::F32, 14, 14, 192, 0}, 192,
                                            RowsOut{b.data(), DType::F32, 14, 192}, 0, 14});
          break;
        case Family::AddReLU:
          t.add_relu(DType::F32, a.data(), b.data(), c.data(), static_cast<int64_t>(a.size()));
          break;
        case Family::Fingerprint: {
          volatile uint64_t sink = t.fingerprint(a.data(), static_cast<int64_t>(a.size() * sizeof(float)));
          (void)sink;
          break;
        }
      }
    });
  };
  // First round: warms caches, page tables and (on CPUs that have one) the wide-vector frequency licence. A candidate
  // more than twice as slow as the best (the SSE2 build next to AVX2) cannot win and is not timed again, which keeps
  // the whole probe short.
  std::vector<bool> live(n, true);
  for (int i = 0; i < n; ++i) out[i] = once(i);
  const double first_best = *std::min_element(out, out + n);
  for (int i = 0; i < n; ++i) live[i] = out[i] <= 2 * first_best;
  // Interleaved rounds, rotating the order, so a noisy moment or a clock change hits every candidate alike; the
  // minimum is the run least disturbed by the rest of the machine.
  constexpr int kRounds = 7;
  for (int i = 0; i < n; ++i)
    if (live[i]) out[i] = once(i);
  for (int r = 1; r < kRounds; ++r)
    for (int j = 0; j < n; ++j) {
      const int i = (j + r) % n;
      if (live[i]) out[i] = std::min(out[i], once(i));
    }
}

}  // namespace cnnkernels::cpu
