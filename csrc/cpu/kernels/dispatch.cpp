// Which ISA build each kernel family runs. A wider build is not always faster (Zen 4 runs a 512-bit FMA as two
// 256-bit halves; a family may be memory-bound), so unless CNNKERNELS_CPU_ISA names one, every family runs the build
// that a short timing probe (probe.cpp) finds fastest on this CPU. torch's ATEN_CPU_CAPABILITY plays no part.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/kernels/kernel_table.h"

namespace cnnkernels::cpu {

const char* family_name(Family f) {
  static const char* names[kFamilies] = {"conv", "depthwise", "maxpool", "add_relu", "fingerprint"};
  return names[static_cast<int>(f)];
}

namespace {

struct Build {
  const char* env_name;      // its CNNKERNELS_CPU_ISA value
  const KernelTable* table;  // nullptr: not compiled into this library
  bool runs;                 // this CPU has every instruction set extension the build was compiled with
};

// Narrowest first. The feature lists match the -m flags CMakeLists.txt compiles each build with.
std::vector<Build> builds() {
  std::vector<Build> b;
#ifdef CNNKERNELS_HAVE_DEFAULT
  b.push_back({"default", &DEFAULT::table(), true});
#endif
#if defined(__GNUC__) || defined(__clang__)
  __builtin_cpu_init();
#endif
#ifdef CNNKERNELS_HAVE_AVX2
  b.push_back({"avx2", &AVX2::table(),
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
                   __builtin_cpu_supports("bmi2")});
#endif
#ifdef CNNKERNELS_HAVE_AVX512
  b.push_back({"avx512", &AVX512::table(),
               __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2")});
#endif
  return b;
}

std::string lower(const char* s) {
  std::string r(s);
  for (auto& ch : r) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return r;
}

std::string fmt_us(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", s * 1e6);
  return buf;
}

struct Dispatch {
  KernelTable table{};
  std::string report;  // JSON, see cnnkernels_cpu_dispatch
};

Dispatch decide() {
  const std::vector<Build> all = builds();
  std::vector<const Build*> usable;
  for (const auto& b : all)
    if (b.runs) usable.push_back(&b);
  const KernelTable* chosen[kFamilies];
  std::string why[kFamilies], times[kFamilies];
  std::string request_json = "null", note;
  double probe_ms = 0;

  const char* env = std::getenv("CNNKERNELS_CPU_ISA");
  const std::string request = env ? lower(env) : "";
  if (!request.empty()) {
    auto named = std::find_if(all.begin(), all.end(), [&](const Build& b) { return request == b.env_name; });
    if (named == all.end())
      throw std::invalid_argument("CNNKERNELS_CPU_ISA='" + std::string(env) +
                                  "' is not one of 'default', 'avx2', 'avx512' (or unset for the fastest)");
    request_json = "\"" + request + "\"";
    // Never above what the CPU runs: the widest usable build at or below the one asked for.
    const Build* use = nullptr;
    for (const auto& b : all) {
      if (b.runs) use = &b;
      if (&b == &*named) break;
    }
    const std::string name = use->table->isa;
    std::string reason = "CNNKERNELS_CPU_ISA=" + request;
    if (use != &*named) {
      note = std::string("this CPU cannot run the ") + named->table->isa + " build; using " + name;
      reason += " (" + note + ")";
    }
    for (int f = 0; f < kFamilies; ++f) {
      chosen[f] = use->table;
      why[f] = reason;
    }
  } else {
    std::vector<const KernelTable*> cands;
    for (const Build* b : usable) cands.push_back(b->table);
    const auto t0 = std::chrono::steady_clock::now();
    for (int f = 0; f < kFamilies; ++f) {
      if (cands.size() == 1) {
        chosen[f] = cands[0];
        why[f] = "the only build this CPU runs";
        continue;
      }
      std::vector<double> s(cands.size());
      probe_family(static_cast<Family>(f), cands.data(), static_cast<int>(cands.size()), s.data());
      const size_t best = std::min_element(s.begin(), s.end()) - s.begin();
      chosen[f] = cands[best];
      why[f] = "fastest in the timing probe";
      for (size_t i = 0; i < cands.size(); ++i)
        times[f] += std::string(i ? ", " : "") + "\"" + cands[i]->isa + "\": " + fmt_us(s[i]);
    }
    probe_ms = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e3;
  }

  Dispatch d;
  const KernelTable& conv = *chosen[static_cast<int>(Family::Conv)];
  d.table = conv;  // conv_rows and the panel width its packed weights use
  d.table.depthwise_rows = chosen[static_cast<int>(Family::Depthwise)]->depthwise_rows;
  d.table.maxpool3x3_rows = chosen[static_cast<int>(Family::MaxPool)]->maxpool3x3_rows;
  d.table.add_relu = chosen[static_cast<int>(Family::AddReLU)]->add_relu;
  d.table.fingerprint = chosen[static_cast<int>(Family::Fingerprint)]->fingerprint;
  bool same = true;
  for (int f = 1; f < kFamilies; ++f) same &= chosen[f] == chosen[0];
  d.table.isa = same ? chosen[0]->isa : "mixed";

  std::string usable_json;
  for (const Build* b : usable)
    usable_json += std::string(usable_json.empty() ? "" : ", ") + "\"" + b->table->isa + "\"";
  d.report = "{\"isa\": \"" + std::string(d.table.isa) + "\", \"request\": " + request_json + ", \"note\": \"" + note +
             "\", \"runnable\": [" + usable_json + "], \"probe_ms\": " + fmt_us(probe_ms * 1e-6) +
             ", \"families\": {";
  for (int f = 0; f < kFamilies; ++f) {
    d.report += std::string(f ? ", " : "") + "\"" + family_name(static_cast<Family>(f)) + "\": {\"isa\": \"" +
                chosen[f]->isa + "\", \"why\": \"" + why[f] + "\", \"probe_us\": {" + times[f] + "}}";
  }
  d.report += "}}";
  return d;
}

const Dispatch& dispatch() {
  static const Dispatch d = decide();  // thread-safe, once per process
  return d;
}

}  // namespace

const KernelTable& kernels() {
  return dispatch().table;
}

}  // namespace cnnkernels::cpu

// Lets Python (cnnkernels.info, the bench header) ask what the kernels use without a torch op for it. These are called
// through ctypes, where an exception would abort the process: a failed decision (a bad CNNKERNELS_CPU_ISA) is
// returned as text instead, and every op call raises it.
namespace {
template <typename F>
const char* noexcept_text(F&& f) {
  static thread_local std::string error;
  try {
    return f();
  } catch (const std::exception& e) {
    error = e.what();
    return error.c_str();
  }
}
}  // namespace

extern "C" __attribute__((visibility("default"))) const char* cnnkernels_cpu_isa() {
  return noexcept_text([] { return cnnkernels::cpu::kernels().isa; });
}
// JSON: {"isa", "request" (CNNKERNELS_CPU_ISA or null), "note", "runnable": [builds this CPU runs], "probe_ms",
// "families": {name: {"isa", "why", "probe_us": {build: microseconds per probe run}}}}; or the error's text.
extern "C" __attribute__((visibility("default"))) const char* cnnkernels_cpu_dispatch() {
  return noexcept_text([] { return cnnkernels::cpu::dispatch().report.c_str(); });
}
extern "C" __attribute__((visibility("default"))) const char* cnnkernels_cpu_isas_compiled() {
  return CNNKERNELS_ISAS;
}
