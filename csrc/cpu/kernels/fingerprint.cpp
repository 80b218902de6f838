// Fingerprint: independent 32-bit lanes, each updated with xxHash32's round s = rotl(s + word * P2, 13) * P1. For a
// fixed word the round is a bijection of s, so a change to a single word always leaves its lane different. The
// rotation matters: with a plain s = (s ^ word) * K the top bit passes through the multiply unmixed, and negating an
// even number of floats per lane (w.mul_(-1)) left every lane unchanged.
#include <cstdint>

#include "cpu/kernels/common.h"

namespace cnnkernels::cpu {
namespace CPU_CAPABILITY {
namespace {

typedef uint32_t u32v __attribute__((vector_size(V * 4), aligned(4)));  // one native vector of 32-bit lanes
constexpr int L = V;

}  // namespace

uint64_t fingerprint(const void* data, int64_t bytes) {
  constexpr int kAcc = 8;
  constexpr int64_t kStep = kAcc * L * 4;
  constexpr uint32_t P1 = 0x9E3779B1u, P2 = 0x85EBCA77u;
  u32v acc[kAcc];
  for (int j = 0; j < kAcc; ++j)
    for (int l = 0; l < L; ++l) acc[j][l] = 0x85EBCA6Bu * static_cast<uint32_t>(j * L + l + 1);
  const char* p = static_cast<const char*>(data);
  int64_t i = 0;
  for (; i + kStep <= bytes; i += kStep)
    unroll<kAcc>([&](auto j) {
      u32v w;
      __builtin_memcpy(&w, p + i + j * L * 4, L * 4);
      const u32v t = acc[j] + w * P2;
      acc[j] = ((t << 13) | (t >> 19)) * P1;
    });
  uint64_t h = 0xCBF29CE484222325ULL ^ static_cast<uint64_t>(bytes);
  auto mix = [&h](uint64_t v) {
    h = (h ^ v) * 0x100000001B3ULL;
    h ^= h >> 29;
  };
  for (; i < bytes; ++i) mix(static_cast<unsigned char>(p[i]));
  for (int j = 0; j < kAcc; ++j)
    for (int l = 0; l < L; ++l) mix(acc[j][l]);
  return h;
}

}  // namespace CPU_CAPABILITY
}  // namespace cnnkernels::cpu
