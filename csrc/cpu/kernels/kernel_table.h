#pragma once
// The interface between the op wrappers (plain C++, compiled once) and the SIMD kernels (one file per family beside
// this one, table() in kernel_table.cpp; compiled once per ISA level into namespace cnnkernels::cpu::<ISA>). Everything
// crossing it is plain data: raw pointers, sizes, element types. Kernels are single-threaded over the row range they
// are given; the wrappers parallelise.
#include <cstdint>

#include "common/checks.h"

namespace cnnkernels::cpu {

// Element types the kernels read and write. Scratch buffers between fused stages are always F32.
enum class DType : int { F32 = 0, BF16 = 1, F16 = 2 };

// A band of NHWC pixel rows. Pixel (h, w) of the image lives at data + (slot(h) * W + w) * ld elements, where
// slot(h) = h - row0, or h % ring when ring > 0 (a ring buffer of `ring` rows). Rows outside [0, H) are zero padding.
// Lets a fused stage read a window of rows that an earlier stage produced into a small scratch buffer.
struct RowsIn {
  const void* data;
  DType type;
  int64_t H, W, ld, row0;
  int64_t ring = 0;
};

// Output rows [oh0, oh1) of an NHWC image; pixel (oh, ow) at data + ((oh - oh0) * Wo + ow) * ld (+ channel).
struct RowsOut {
  void* data;
  DType type;
  int64_t Wo, ld;
};

struct ConvRowsArgs {
  RowsIn x;
  int64_t Cin;                // channels read from each input pixel
  const float* wpack;         // weights packed by pack_conv_weight for this ISA's panel width
  int64_t Cout, kH, kW, sH, sW, pH, pW, dH, dW;
  const float* bias;          // [Cout] fp32 or nullptr
  RowsOut y;
  const void* res;            // residual, indexed like y (same type, its own ld), or nullptr
  int64_t res_ld;
  Activation act;
  int64_t oh0, oh1;
};

// Depthwise (one filter per channel) conv over output rows [oh0, oh1).
struct DwRowsArgs {
  RowsIn x;
  int64_t C;
  const float* w;             // [kH*kW][w_ld] fp32 (pack_depthwise_weight), its first C channels used
  int64_t kH, kW, sH, sW, pH, pW, dH, dW;
  const float* bias;          // [C] fp32 or nullptr
  RowsOut y;
  const void* res;
  int64_t res_ld;
  Activation act;
  int64_t oh0, oh1;
  int64_t w_ld = 0;           // channels per tap row of w (0: C); lets a call cover a slice of a layer's channels
};

// 3x3, stride 1, padding 1 max pool over output rows [oh0, oh1) (padding never wins the max, as in PyTorch).
struct MaxPoolRowsArgs {
  RowsIn x;
  int64_t C;
  RowsOut y;
  int64_t oh0, oh1;
};

struct KernelTable {
  const char* isa;
  int64_t panel;  // output channels per packed weight panel (conv weights are packed for this width)
  void (*add_relu)(DType t, const void* a, const void* b, void* out, int64_t n);
  void (*conv_rows)(const ConvRowsArgs& args);
  void (*depthwise_rows)(const DwRowsArgs& args);
  void (*maxpool3x3_rows)(const MaxPoolRowsArgs& args);
  // A 64-bit fingerprint of `bytes` bytes, to let the weight cache see a changed weight without trusting version
  // counters. Not a 64-bit-strong hash: the data is hashed in 8 x V independent 32-bit lanes (32 lanes in the DEFAULT
  // build, 64 with AVX2, 128 with AVX-512), folded into 64 bits at the end. A change to one 32-bit word (or to the
  // tail bytes) always changes the result; a change to several words that all fall in one lane goes unseen with
  // probability about 2^-32 (that lane's state); changes spread over k lanes about 2^-32k. Non-cryptographic: it
  // guards against accidents, not against data crafted to collide.
  uint64_t (*fingerprint)(const void* data, int64_t bytes);
};

// Kernel families chosen independently at run time: each may come from a different ISA build, since which build is
// fastest depends on the microarchitecture (AVX-512 doubles the FMA width on Intel servers and Zen 5, not on Zen 4)
// and on the kernel. A family's members share data layouts (conv_rows reads weights packed for its own `panel`).
enum class Family : int { Conv = 0, Depthwise, MaxPool, AddReLU, Fingerprint };
constexpr int kFamilies = 5;
const char* family_name(Family f);

// The kernels this process runs (decided once, at first use, by dispatch.cpp): per family, the ISA that
// CNNKERNELS_CPU_ISA names, or else the fastest of the builds this CPU can run, by a short timing probe.
const KernelTable& kernels();

// Seconds per run of `family`'s probe workload for each table in `tables` (single thread; the minimum over
// interleaved rounds; a table far slower than the best after the first round is not timed again and keeps that
// first time). Defined in probe.cpp.
void probe_family(Family family, const KernelTable* const* tables, int n, double* seconds);

#define CNNKERNELS_DECLARE_TABLE(ISA) \
  namespace ISA { const KernelTable& table(); }
#ifdef CNNKERNELS_HAVE_DEFAULT
CNNKERNELS_DECLARE_TABLE(DEFAULT)
#endif
#ifdef CNNKERNELS_HAVE_AVX2
CNNKERNELS_DECLARE_TABLE(AVX2)
#endif
#ifdef CNNKERNELS_HAVE_AVX512
CNNKERNELS_DECLARE_TABLE(AVX512)
#endif
#undef CNNKERNELS_DECLARE_TABLE

}  // namespace cnnkernels::cpu
