#pragma once
// The vector type the kernels compute with, and loads/stores that widen fp16/bf16 to fp32 lanes and round back once,
// for the ISA build being compiled (CPU_CAPABILITY). Only for the per-ISA kernel sources (CNNKERNELS_ISA_SOURCES).
//
// Nothing here goes through a stack buffer: a kernel's inner loop that loads a partial vector (a layer's last 8 of 24
// channels) or a 16-bit tensor would otherwise store and reload every such vector, and
// tests/packaging/test_disassembly.py fails on vector stack traffic inside the multiply-accumulate loops.
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#elif defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace cnnkernels::cpu {
namespace CPU_CAPABILITY {
namespace {

#if defined(CPU_CAPABILITY_DEFAULT) && defined(__SSE2__)
// ATen's generic Vectorized<float> is an array of 8 floats, which GCC keeps in memory (and its fmadd out of line): the
// portable x86-64 build uses SSE2's 4-lane registers instead, so a tile's accumulators fit the 16 xmm registers.
struct Vec {
  __m128 v;
  Vec() = default;
  Vec(float s) : v(_mm_set1_ps(s)) {}  // NOLINT: broadcast, as Vectorized<float>(float)
  Vec(__m128 x) : v(x) {}              // NOLINT
  operator __m128() const { return v; }
  static constexpr int size() { return 4; }
  static Vec loadu(const float* p) { return _mm_loadu_ps(p); }
  static Vec loadu(const float* p, int n) {  // n < 4 elements, the rest zero, never reading past p + n
    const __m128 lo = n >= 2 ? _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(p))) : _mm_load_ss(p);
    return n == 3 ? _mm_movelh_ps(lo, _mm_load_ss(p + 2)) : lo;
  }
  void store(float* p) const { _mm_storeu_ps(p, v); }
  void store(float* p, int n) const {
    if (n >= 2) {
      _mm_storel_pi(reinterpret_cast<__m64*>(p), v);
      if (n == 3) _mm_store_ss(p + 2, _mm_movehl_ps(v, v));
    } else {
      _mm_store_ss(p, v);
    }
  }
  friend Vec operator+(Vec a, Vec b) { return _mm_add_ps(a.v, b.v); }
  friend Vec operator-(Vec a, Vec b) { return _mm_sub_ps(a.v, b.v); }
  friend Vec operator*(Vec a, Vec b) { return _mm_mul_ps(a.v, b.v); }
  friend Vec operator/(Vec a, Vec b) { return _mm_div_ps(a.v, b.v); }
};
// SSE2 has no FMA: multiply, then add (what ATen's generic fmadd computes too).
inline Vec vfmadd(Vec a, Vec b, Vec c) { return _mm_add_ps(_mm_mul_ps(a.v, b.v), c.v); }
// NaN-propagating like torch.maximum/minimum: an unordered pair yields all-ones (a NaN).
inline Vec vmax(Vec a, Vec b) { return _mm_or_ps(_mm_max_ps(a.v, b.v), _mm_cmpunord_ps(a.v, b.v)); }
inline Vec vmin(Vec a, Vec b) { return _mm_or_ps(_mm_min_ps(a.v, b.v), _mm_cmpunord_ps(a.v, b.v)); }
// exp in SSE2 registers (Cephes' expf polynomial, a few ulp), no libm call: a call would spill the accumulators of
// the tile whose epilogue applies SiLU. Beyond float's range: 0 below ln(FLT_MIN), inf above ln(FLT_MAX), NaN stays.
inline Vec vexp(Vec a) {
  const __m128 lo = _mm_set1_ps(-87.33654475f), hi = _mm_set1_ps(88.72283935f);
  const __m128 x = _mm_min_ps(_mm_max_ps(a.v, lo), hi);
  const __m128i n = _mm_cvtps_epi32(_mm_mul_ps(x, _mm_set1_ps(1.44269504f)));  // round(x / ln 2)
  const __m128 nf = _mm_cvtepi32_ps(n);
  const __m128 r = _mm_sub_ps(_mm_sub_ps(x, _mm_mul_ps(nf, _mm_set1_ps(0.693359375f))),
                              _mm_mul_ps(nf, _mm_set1_ps(-2.12194440e-4f)));
  __m128 p = _mm_set1_ps(1.9875691500e-4f);
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.3981999507e-3f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(8.3334519073e-3f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(4.1665795894e-2f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(1.6666665459e-1f));
  p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(5.0000001201e-1f));
  p = _mm_add_ps(_mm_add_ps(_mm_mul_ps(p, _mm_mul_ps(r, r)), r), _mm_set1_ps(1.f));
  // 2^n in two factors, so n = 128 (x near ln(FLT_MAX)) never forms an infinite exponent.
  const __m128i n1 = _mm_srai_epi32(n, 1), n2 = _mm_sub_epi32(n, n1);
  const __m128i bias = _mm_set1_epi32(127);
  p = _mm_mul_ps(p, _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(n1, bias), 23)));
  p = _mm_mul_ps(p, _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(n2, bias), 23)));
  p = _mm_andnot_ps(_mm_cmplt_ps(a.v, lo), p);
  p = _mm_or_ps(_mm_andnot_ps(_mm_cmpgt_ps(a.v, hi), p), _mm_and_ps(_mm_cmpgt_ps(a.v, hi),
                                                                     _mm_set1_ps(std::numeric_limits<float>::infinity())));
  return _mm_or_ps(p, _mm_cmpunord_ps(a.v, a.v));
}
#else
using Vec = at::vec::Vectorized<float>;
inline Vec vfmadd(const Vec& a, const Vec& b, const Vec& c) { return at::vec::fmadd(a, b, c); }
inline Vec vmax(const Vec& a, const Vec& b) { return at::vec::maximum(a, b); }
inline Vec vmin(const Vec& a, const Vec& b) { return at::vec::minimum(a, b); }
// ATen's intrinsics-only exp (polynomial, about 20 ulp; Vectorized::exp() would call Sleef, which libtorch does not
// export). It clamps large inputs to FLT_MAX; they are made inf again, as std::exp gives, so SiLU's x / (1 + e^-x)
// is -0 at -100 and NaN at -inf exactly as torch computes it.
inline Vec vexp(const Vec& a) {
  return Vec::blendv(a.exp_u20(), Vec(std::numeric_limits<float>::infinity()), a > Vec(88.72283935546875f));
}
#endif
constexpr int V = Vec::size();

template <typename T>
inline float to_float(T v) {
  return static_cast<float>(v);
}
#if defined(__F16C__)
template <>
inline float to_float<c10::Half>(c10::Half v) {  // one instruction instead of c10's bit manipulation
  return _cvtsh_ss(v.x);
}
#endif

#if !defined(CPU_CAPABILITY_AVX2)
// ATen's AVX-512 partial loadu/store are masked; the SSE2 vector's above assemble the lanes in registers.
inline Vec load_f32(const float* p, int n) { return n == V ? Vec::loadu(p) : Vec::loadu(p, n); }
inline void store_f32(float* p, const Vec& v, int n) {
  if (n == V) v.store(p); else v.store(p, n);
}
#endif

#if defined(CPU_CAPABILITY_AVX512)
// n <= 16 16-bit elements (the rest zero); masked, so never touching memory past p + n.
inline __m256i load_u16(const void* p, int n) {
  return n == V ? _mm256_loadu_si256(static_cast<const __m256i*>(p))
                : _mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << n) - 1), p);
}
inline void store_u16(void* p, __m256i w, int n) {
  if (n == V) {
    _mm256_storeu_si256(static_cast<__m256i*>(p), w);
  } else {
    _mm256_mask_storeu_epi16(p, static_cast<__mmask16>((1u << n) - 1), w);
  }
}
inline Vec widen(const c10::Half* p, int n) { return Vec(_mm512_cvtph_ps(load_u16(p, n))); }
inline Vec widen(const c10::BFloat16* p, int n) {
  return Vec(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load_u16(p, n)), 16)));
}
inline void narrow(c10::Half* p, const Vec& v, int n) {
  store_u16(p, _mm512_cvtps_ph(__m512(v), _MM_FROUND_TO_NEAREST_INT), n);
}
// Round-to-nearest-even, NaN stays NaN: exactly what c10::BFloat16 does per element.
inline void narrow(c10::BFloat16* p, const Vec& v, int n) {
  const __m512i b = _mm512_castps_si512(__m512(v));
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(__m512(v), __m512(v), _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7fc0));
  store_u16(p, _mm512_cvtepi32_epi16(r), n);
}
#elif defined(CPU_CAPABILITY_AVX2)
// ATen's partial loadu/store copy through a stack buffer; maskload/maskstore lanes outside the mask never fault.
inline __m256i lane_mask(int n) {
  alignas(32) static const int32_t table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + 8 - n));
}
inline Vec load_f32(const float* p, int n) {
  return Vec(n == V ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask(n)));
}
inline void store_f32(float* p, const Vec& v, int n) {
  if (n == V) _mm256_storeu_ps(p, __m256(v)); else _mm256_maskstore_ps(p, lane_mask(n), __m256(v));
}
// n <= 8 16-bit elements into the low lanes of an xmm (the rest zero), assembled from 8-, 4- and 2-byte loads.
inline __m128i load_u16(const void* ptr, int n) {
  const char* p = static_cast<const char*>(ptr);
  if (n == V) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i lo = (n & 4) ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)) : _mm_setzero_si128();
  const char* q = p + (n & 4) * 2;
  int32_t w2 = 0;
  uint16_t w1 = 0;
  if (n & 2) std::memcpy(&w2, q, 4);
  if (n & 1) std::memcpy(&w1, q + (n & 2) * 2, 2);
  __m128i tail = _mm_cvtsi32_si128(w2);
  const __m128i one = _mm_cvtsi32_si128(w1);
  tail = _mm_or_si128(tail, (n & 2) ? _mm_slli_si128(one, 4) : one);
  return _mm_or_si128(lo, (n & 4) ? _mm_slli_si128(tail, 8) : tail);
}
inline void store_u16(void* ptr, __m128i w, int n) {
  char* p = static_cast<char*>(ptr);
  if (n == V) return _mm_storeu_si128(reinterpret_cast<__m128i*>(p), w);
  if (n & 4) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), w);
    w = _mm_srli_si128(w, 8);
    p += 8;
  }
  if (n & 2) {
    const int32_t w2 = _mm_cvtsi128_si32(w);
    std::memcpy(p, &w2, 4);
    w = _mm_srli_si128(w, 4);
    p += 4;
  }
  if (n & 1) {
    const uint16_t w1 = static_cast<uint16_t>(_mm_cvtsi128_si32(w));
    std::memcpy(p, &w1, 2);
  }
}
inline Vec widen(const c10::Half* p, int n) { return Vec(_mm256_cvtph_ps(load_u16(p, n))); }
inline Vec widen(const c10::BFloat16* p, int n) {
  return Vec(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_u16(p, n)), 16)));
}
inline void narrow(c10::Half* p, const Vec& v, int n) {
  store_u16(p, _mm256_cvtps_ph(__m256(v), _MM_FROUND_TO_NEAREST_INT), n);
}
inline void narrow(c10::BFloat16* p, const Vec& v, int n) {
  const __m256i b = _mm256_castps_si256(__m256(v));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  const __m256 nan = _mm256_cmp_ps(__m256(v), __m256(v), _CMP_UNORD_Q);
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), _mm256_castps_si256(nan));
  store_u16(p, _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)), n);
}
#else
#if defined(__SSE2__)
// Element by element in general-purpose registers (c10's conversions), assembled in an xmm without a buffer.
template <typename T>
inline Vec widen(const T* p, int n) {
  return _mm_setr_ps(to_float(p[0]), n > 1 ? to_float(p[1]) : 0.f, n > 2 ? to_float(p[2]) : 0.f,
                     n > 3 ? to_float(p[3]) : 0.f);
}
template <typename T>
inline void narrow(T* p, const Vec& v, int n) {
  __m128 x = v;
  for (int i = 0; i < n; ++i, x = _mm_shuffle_ps(x, x, _MM_SHUFFLE(0, 3, 2, 1)))
    p[i] = static_cast<T>(_mm_cvtss_f32(x));
}
#else  // not x86: ATen's generic vector, converting through a buffer
template <typename T>
inline Vec widen(const T* p, int n) {
  float tmp[V] = {};
  for (int i = 0; i < n; ++i) tmp[i] = to_float(p[i]);
  return Vec::loadu(tmp);
}
template <typename T>
inline void narrow(T* p, const Vec& v, int n) {
  float tmp[V];
  v.store(tmp);
  for (int i = 0; i < n; ++i) p[i] = static_cast<T>(tmp[i]);
}
#endif
#endif

// Loads n <= V elements as fp32 lanes (the rest zero).
template <typename T>
inline Vec load(const T* p, int n) {
  if constexpr (std::is_same_v<T, float>) {
    return load_f32(p, n);
  } else {
    return widen(p, n);
  }
}

template <typename T>
inline void store(T* p, const Vec& v, int n) {
  if constexpr (std::is_same_v<T, float>) {
    store_f32(p, v, n);
  } else {
    narrow(p, v, n);
  }
}

}  // namespace
}  // namespace CPU_CAPABILITY
}  // namespace cnnkernels::cpu
