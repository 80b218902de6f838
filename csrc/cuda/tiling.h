#pragma once
// Tile shapes, shared-memory layouts and launch plans of the GEMM-based kernels. The launcher sizes the dynamic shared
// memory with these functions and the kernel carves it with the very same plan (passed as a kernel argument); the
// host tests exercise them directly. Plain C++, no CUDA or torch headers.
#include <cstdint>

#include "cuda/device_math.h"

namespace cnnkernels::cuda {

constexpr int kThreads = 256;  // 8 warps per block
constexpr int kBM = 64;        // output pixels per block tile (GEMM rows)
constexpr int kBN = 64;        // output channels per block tile (GEMM columns)
constexpr int kPadT = 8;       // padding of tiles of the data type: keeps WMMA's ldm a multiple of 16 bytes
constexpr int kPadF = 4;       // padding of fp32 staging tiles (WMMA accumulator stores)
constexpr int kAlign = 128;    // every shared-memory region starts on this boundary (WMMA wants 32 bytes)
constexpr int64_t kSmemDefault = 48 * 1024;   // more needs an opt-in per kernel
constexpr int64_t kResidentCap = 100 * 1024;  // keep A resident only while a block stays this small

// GEMM K chunk, which is also the inverted residual's hidden-channel chunk: 32 for 2- and 4-byte types, 16 for fp64
// (halves its shared memory).
CNNKERNELS_HD constexpr int chunk_k(int t_bytes) { return t_bytes == 8 ? 16 : 32; }

// One GEMM row of a block: the output pixel it computes. m < 0 marks a row outside the output. 64-bit throughout: an
// output may have more than 2**31 rows or columns (e.g. [1, 1, 2**31 + 1, 1]).
struct RowInfo {
  int64_t m;     // linear output pixel (n * Ho + oh) * Wo + ow
  int64_t n;
  int64_t h, w;  // output row / column
};

// The row of output pixel m of an [N][Ho][Wo] output with M = N * Ho * Wo pixels.
CNNKERNELS_HD RowInfo row_info(int64_t m, int64_t M, int64_t Ho, int64_t Wo) {
  if (m < 0 || m >= M) return RowInfo{-1, 0, 0, 0};
  const PixelPos p = split_pixel(m, Ho, Wo);
  return RowInfo{m, p.n, p.h, p.w};
}

// The im2col gather's index math, split so that nothing is divided per element: the element of row r, column k reads
// input offset row.base + col.delta, inside the input when 0 <= row.ih0 + col.dh < H and 0 <= row.iw0 + col.dw < W.
// base and delta are computed modulo 2**64 (huge strides or padding make either one overflow on its own); their sum
// is the exact offset whenever the element is inside the input.
struct GatherRow {
  uint64_t base;     // offset of (n, ih0, iw0, 0), wrapped
  int64_t ih0, iw0;  // window origin; ih0 = kGatherOutside for a row outside the output
};
// An origin past every input height (a contiguous input has fewer than 2**62 rows), to which any kh * dH (< 2**62) adds
// without overflow: every tap of such a row is out of range.
constexpr int64_t kGatherOutside = int64_t(1) << 62;

CNNKERNELS_HD GatherRow gather_row(const RowInfo& r, int64_t H, int64_t W, int64_t ld, int sH, int sW, int pH, int pW) {
  if (r.m < 0) return GatherRow{0, kGatherOutside, 0};
  const int64_t ih0 = halo_origin(r.h, sH, pH), iw0 = halo_origin(r.w, sW, pW);
  const uint64_t base = ((static_cast<uint64_t>(r.n) * static_cast<uint64_t>(H) + static_cast<uint64_t>(ih0)) *
                             static_cast<uint64_t>(W) +
                         static_cast<uint64_t>(iw0)) *
                        static_cast<uint64_t>(ld);
  return GatherRow{base, ih0, iw0};
}

struct GatherCol {
  uint64_t delta;  // offset of (kh * dH, kw * dW, channel) from a row's base, wrapped
  int64_t dh, dw;  // kh * dH, kw * dW
};

// Column k < K = kH * kW * Cg of group g (its channels start at c0 = g * Cg); K < 2**31 (plan_gemm).
CNNKERNELS_HD GatherCol gather_col(int k, int Cg, int kW, int dH, int dW, int64_t W, int64_t ld, int64_t c0) {
  const KPos p = split_k(k, Cg, kW);
  const int64_t dh = static_cast<int64_t>(p.kh) * dH, dw = static_cast<int64_t>(p.kw) * dW;
  const uint64_t delta =
      (static_cast<uint64_t>(dh) * static_cast<uint64_t>(W) + static_cast<uint64_t>(dw)) * static_cast<uint64_t>(ld) +
      static_cast<uint64_t>(c0 + p.c);
  return GatherCol{delta, dh, dw};
}

// Whether the element (row, col) lies inside the H x W input.
CNNKERNELS_HD bool gather_inside(const GatherRow& r, const GatherCol& c, int64_t H, int64_t W) {
  const int64_t ih = r.ih0 + c.dh, iw = r.iw0 + c.dw;
  return ih >= 0 && ih < H && iw >= 0 && iw < W;
}

// Byte offsets into a block's dynamic shared memory, and the tiles' leading dimensions (in elements).
//   rows : RowInfo[kBM]
//   p    : the producer's own scratch (the gather's GatherRow[kBM]), `scratch` bytes
//   a    : A tile [kBM][lda] of T (the producer's output: im2col gather, pooled input, depthwise result)
//   a2   : a second A chunk buffer [kBM][lda] (== a when there is none): chunk k + 1 is loaded while chunk k is used
//   b    : B tile [bk][ldb] of T (a chunk of the packed weight)
//   b2   : a second B chunk buffer [bk][ldb] (== b when there is none)
//   e    : inverted residual only: expanded activation of the halo, [halo_pixels][lde] of the accumulation type
//   union, never live at the same time:
//     c  : 16-bit types: fp32 staging of the WMMA accumulators for the epilogue, [kBM][ldc]
//     x, w, ce : inverted residual expansion GEMM: input tile [kBM][ldx] T, weight tile [bk][ldw] T,
//                fp32 staging [kBM][ldce] (16-bit types)
struct SmemPlan {
  int bk, lda, ldb, ldc, lde, ldx, ldw, ldce;
  int64_t rows, a, b, e, c, x, w, ce;
  int64_t a2, b2, p;
  int64_t bytes;
};

CNNKERNELS_HD int64_t align_up(int64_t v) { return round_up(v, kAlign); }

// t_bytes / acc_bytes: sizes of the data and accumulation types. k_resident: the GEMM K when A is kept for the whole
// K (computed once per block, reused for all its column tiles), 0 when A is produced chunk by chunk. halo_pixels: rows
// of the inverted residual's expanded tile (0 otherwise); expand: that block has an expansion GEMM. a_bufs, b_bufs: 1
// or 2 chunk buffers of A (1 when A is resident) and B; scratch: bytes of the producer's region p.
CNNKERNELS_HD SmemPlan plan_smem(int t_bytes, int acc_bytes, int64_t k_resident, int64_t halo_pixels, bool expand,
                                 int a_bufs = 1, int b_bufs = 1, int64_t scratch = 0) {
  SmemPlan p{};
  const bool staged = t_bytes == 2;  // WMMA accumulators go through fp32 shared memory
  p.bk = chunk_k(t_bytes);
  p.lda = static_cast<int>((k_resident > 0 ? round_up(k_resident, p.bk) : p.bk) + kPadT);
  p.ldb = kBN + kPadT;
  p.ldc = kBN + kPadF;
  p.lde = p.bk + kPadF;
  p.ldx = p.bk + kPadT;
  p.ldw = p.bk + kPadT;
  p.ldce = p.bk + kPadF;
  int64_t off = 0;
  p.rows = off;
  off = align_up(off + kBM * static_cast<int64_t>(sizeof(RowInfo)));
  p.p = off;
  off = align_up(off + scratch);
  const int64_t a_bytes = align_up(static_cast<int64_t>(kBM) * p.lda * t_bytes);
  const int64_t b_bytes = align_up(static_cast<int64_t>(p.bk) * p.ldb * t_bytes);
  p.a = off;
  off += a_bytes;
  p.a2 = p.a;
  if (a_bufs > 1 && k_resident == 0) {
    p.a2 = off;
    off += a_bytes;
  }
  p.b = off;
  off += b_bytes;
  p.b2 = p.b;
  if (b_bufs > 1) {
    p.b2 = off;
    off += b_bytes;
  }
  p.e = off;
  if (halo_pixels > 0) off = align_up(off + halo_pixels * p.lde * acc_bytes);
  const int64_t u = off;
  p.c = u;
  int64_t end = staged ? align_up(u + static_cast<int64_t>(kBM) * p.ldc * 4) : u;
  p.x = p.w = p.ce = u;
  if (expand) {
    p.x = u;
    p.w = align_up(p.x + static_cast<int64_t>(kBM) * p.ldx * t_bytes);
    p.ce = align_up(p.w + static_cast<int64_t>(p.bk) * p.ldw * t_bytes);
    const int64_t xend = staged ? align_up(p.ce + static_cast<int64_t>(kBM) * p.ldce * 4) : p.ce;
    if (xend > end) end = xend;
  }
  p.bytes = end;
  return p;
}

// How a GEMM kernel is launched: grid.x walks the row (pixel) tiles, grid.y spreads the column tiles over as many
// blocks as it takes to give every SM two blocks; a block walks its column tiles blockIdx.y, +gridDim.y, ...
struct LaunchPlan {
  bool ok;
  bool resident;  // A computed once per block for the whole K (see plan_smem)
  int64_t grid_x;
  int grid_y;
  int th, tw;     // inverted residual: output tile rows x columns (th * tw <= kBM)
  SmemPlan smem;
};

CNNKERNELS_HD int col_split(int64_t row_tiles, int64_t col_tiles, int sms) {
  const int64_t want = 2 * static_cast<int64_t>(sms < 1 ? 1 : sms);
  int64_t y = row_tiles >= want ? 1 : ceil_div(want, row_tiles < 1 ? 1 : row_tiles);
  if (y > col_tiles) y = col_tiles;
  if (y > 65535) y = 65535;
  if (y < 1) y = 1;
  return static_cast<int>(y);
}

// Shared memory is the only limit: keep A resident when a block walks more than one column tile and the resident
// tile fits; otherwise produce A per K chunk (recomputed for each column tile). With `pipelined` (a device with
// cp.async), two B chunk buffers when they fit (the loads of chunk k + 1 overlap the multiply of chunk k), and two A
// chunk buffers too for a producer whose A chunk is a plain asynchronous copy (async_a); the single-buffer layouts are
// the fallbacks, and all there is without cp.async (the second buffers would only cost blocks per SM). scratch: bytes
// of the producer's own region.
// K and the row tiles (grid.x) must stay below 2**31: the kernels split K in 32-bit ints.
CNNKERNELS_HD LaunchPlan plan_gemm(int64_t row_tiles, int64_t col_tiles, int64_t K, int t_bytes, int acc_bytes, int sms,
                             int64_t smem_limit, int64_t halo_pixels, bool expand, bool async_a = false,
                             int64_t scratch = 0, bool pipelined = true) {
  LaunchPlan p{};
  p.grid_x = row_tiles;
  p.grid_y = col_split(row_tiles, col_tiles, sms);
  p.th = p.tw = 0;
  const int64_t tiles_per_block = ceil_div(col_tiles, p.grid_y);
  if (tiles_per_block > 1 && K > 0) {
    for (int b_bufs = pipelined ? 2 : 1; b_bufs >= 1 && !p.resident; --b_bufs) {
      const SmemPlan r = plan_smem(t_bytes, acc_bytes, K, halo_pixels, expand, 1, b_bufs, scratch);
      if (r.bytes <= smem_limit && r.bytes <= kResidentCap) {
        p.resident = true;
        p.smem = r;
      }
    }
  }
  if (!p.resident) {
    const int bufs[3][2] = {{2, 2}, {1, 2}, {1, 1}};  // {A, B}
    for (int i = !pipelined ? 2 : async_a ? 0 : 1; i < 3; ++i) {
      p.smem = plan_smem(t_bytes, acc_bytes, 0, halo_pixels, expand, bufs[i][0], bufs[i][1], scratch);
      if (p.smem.bytes <= smem_limit) break;
    }
  }
  p.ok = p.smem.bytes <= smem_limit && row_tiles >= 1 && row_tiles <= 0x7fffffff && K <= 0x7fffffff;
  return p;
}

// The inverted residual tiles the output in th x tw blocks (2-D, for the depthwise halo): the largest candidate whose
// expanded halo tile fits the shared memory, preferring a resident depthwise result at each size.
CNNKERNELS_HD LaunchPlan plan_inverted_residual(int64_t N, int64_t Ho, int64_t Wo, int stride, int kH, int kW,
                                          int64_t hidden, int64_t Cout, bool expand, int t_bytes, int acc_bytes,
                                          int sms, int64_t smem_limit, bool pipelined = true) {
  LaunchPlan none{};
  none.ok = false;
  // The tile state of expand_depthwise.cuh keeps output rows and columns in 32 bits (its registers are at the cap).
  if (Ho > 0x7fffffff || Wo > 0x7fffffff) return none;
  const int cand[7][2] = {{8, 8}, {4, 8}, {4, 4}, {2, 4}, {2, 2}, {1, 2}, {1, 1}};
  for (int i = 0; i < 7; ++i) {
    const int th = cand[i][0], tw = cand[i][1];
    const int64_t hh = halo_extent(th, stride, kH, 1), hw = halo_extent(tw, stride, kW, 1);
    // A halo taller or wider than the shared memory has bytes cannot fit. Skipping it before multiplying also keeps
    // the products finite: with strides near 2**31 an 8x8 tile's halo has ~2**68 pixels (int64 overflow, and a plan
    // that "fit" a wrapped-around size).
    if (hh > smem_limit || hw > smem_limit) continue;
    const int64_t halo = hh * hw;
    const int64_t row_tiles = N * ceil_div(Ho, th) * ceil_div(Wo, tw);
    LaunchPlan p = plan_gemm(row_tiles, ceil_div(Cout, kBN), hidden, t_bytes, acc_bytes, sms, smem_limit, halo, expand,
                             false, 0, pipelined);
    if (p.ok) {
      p.th = th;
      p.tw = tw;
      return p;
    }
  }
  return none;
}

// ---- depthwise tiles with a shared-memory halo (depthwise_tile.cuh) ------------------------------------------------
// A halo is worth staging only when it holds fewer elements than the tile's windows read (th * tw * kH * kW): else
// (1x1 kernels, strides or dilations larger than the kernel leaves gaps for) the direct kernels read no more from
// global memory and skip the shared-memory round trip. Candidates from the largest; each is clamped to the output
// (no 8-row tile for a 3-row map). A 1x1 tile is never worth it: its halo is at least its window.
struct TileShape {
  int th, tw;
};
constexpr int kTileCands = 6;

CNNKERNELS_HD int pow2_at_least(int64_t v, int cap) {
  int p = 1;
  while (p < cap && p < v) p *= 2;
  return p;
}

CNNKERNELS_HD TileShape tile_candidate(int i, int64_t Ho, int64_t Wo) {
  const int cand[kTileCands][2] = {{8, 8}, {4, 8}, {4, 4}, {2, 4}, {2, 2}, {1, 2}};
  return TileShape{pow2_at_least(Ho, cand[i][0]), pow2_at_least(Wo, cand[i][1])};
}

// conv2d_act's tiled depthwise kernel: a block owns a th x tw output tile and walks chunks of cc channels
// (blockIdx.y, + gridDim.y, ...); thread t computes channel t % cc of the tile pixels t / cc, + kThreads / cc, ...,
// at most kDwPix of them (register sums). The halo is [IH * IW][cc] of the accumulation type, the only shared memory.
constexpr int kDwPix = 8;
constexpr int kDwChunk = 32;               // channels per block: a warp reads 32 consecutive channels
constexpr int64_t kDwSmemCap = 24 * 1024;  // keeps >= 2 blocks per SM on sm_75 (64 KiB), >= 6 on sm_80 and later

struct DepthwisePlan {
  bool ok;  // false: no tile is worth staging or fits; run the direct kernel
  int th, tw, cc;
  int IH, IW;
  int64_t grid_x;
  int grid_y;
  int64_t bytes;
};

CNNKERNELS_HD DepthwisePlan plan_depthwise(int64_t N, int64_t Ho, int64_t Wo, int64_t C, int kH, int kW, int sH,
                                           int sW, int dH, int dW, int acc_bytes, int64_t smem_limit) {
  DepthwisePlan p{};
  p.ok = false;
  const int64_t budget = smem_limit < kDwSmemCap ? smem_limit : kDwSmemCap;
  const int cc = pow2_at_least(C, kDwChunk);  // fewer channels than a chunk: more threads per pixel instead
  for (int i = 0; i < kTileCands; ++i) {
    const auto [th, tw] = tile_candidate(i, Ho, Wo);
    if (th * tw > (kThreads / cc) * kDwPix) continue;
    const int64_t hh = halo_extent(th, sH, kH, dH), hw = halo_extent(tw, sW, kW, dW);
    // Checked before multiplying: with strides or dilations near 2**31 the products would overflow int64.
    if (hh > budget || hw > budget) continue;
    const int64_t halo = hh * hw;
    if (halo >= static_cast<int64_t>(th) * tw * kH * kW) continue;
    const int64_t bytes = halo * cc * acc_bytes;
    if (bytes > budget) continue;
    const int64_t tiles = N * ceil_div(Ho, th) * ceil_div(Wo, tw), chunks = ceil_div(C, cc);
    if (tiles > 0x7fffffff) return p;
    p.ok = true;
    p.th = th;
    p.tw = tw;
    p.cc = cc;
    p.IH = static_cast<int>(hh);
    p.IW = static_cast<int>(hw);
    p.grid_x = tiles;
    p.grid_y = static_cast<int>(chunks < 65535 ? chunks : 65535);
    p.bytes = bytes;
    return p;
  }
  return p;
}

// dwsep_conv2d: GEMM rows are a th x tw output tile (th * tw <= kBM) whose depthwise input halo is staged in the `e`
// region of plan_smem ([IH * IW][lde], accumulation type), per K chunk. A tile is taken when its halo is worth staging
// (above), the plan fits, and the tiles are at most twice as many GEMM row blocks as 64 flattened pixels (small tiles
// leave GEMM rows empty, and the pointwise GEMM is the larger part of the work). Otherwise th = tw = 0: rows of 64
// flattened pixels whose depthwise windows are read from global memory.
CNNKERNELS_HD LaunchPlan plan_dwsep(int64_t N, int64_t Ho, int64_t Wo, int64_t C, int64_t Cout, int kH, int kW, int sH,
                                    int sW, int dH, int dW, int t_bytes, int acc_bytes, int sms, int64_t smem_limit,
                                    bool pipelined = true) {
  const int64_t flat_tiles = ceil_div(N * Ho * Wo, kBM), col_tiles = ceil_div(Cout, kBN);
  for (int i = 0; i < kTileCands; ++i) {
    const auto [th, tw] = tile_candidate(i, Ho, Wo);
    const int64_t hh = halo_extent(th, sH, kH, dH), hw = halo_extent(tw, sW, kW, dW);
    if (hh > smem_limit || hw > smem_limit) continue;  // before multiplying, as in plan_depthwise
    const int64_t halo = hh * hw;
    if (halo >= static_cast<int64_t>(th) * tw * kH * kW) continue;
    const int64_t row_tiles = N * ceil_div(Ho, th) * ceil_div(Wo, tw);
    if (row_tiles > 2 * flat_tiles) continue;
    LaunchPlan p = plan_gemm(row_tiles, col_tiles, C, t_bytes, acc_bytes, sms, smem_limit, halo, false, false, 0,
                             pipelined);
    if (p.ok) {
      p.th = th;
      p.tw = tw;
      return p;
    }
  }
  return plan_gemm(flat_tiles, col_tiles, C, t_bytes, acc_bytes, sms, smem_limit, 0, false, false, 0, pipelined);
}

}  // namespace cnnkernels::cuda
