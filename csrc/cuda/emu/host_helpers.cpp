// Test build (tests/cuda_kernels/test_cuda_host_helpers.py): extern "C" entry points over the __host__ __device__
// helpers the CUDA kernels use for their index math, activations and launch plans (device_math.h, tiling.h), compiled
// for the host with no CUDA or torch headers and loaded with ctypes.
#include "cuda/device_math.h"
#include "cuda/tiling.h"

#define API extern "C" __attribute__((visibility("default")))

using namespace cnnkernels::cuda;

API int64_t cnnk_conv_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d) {
  return conv_out_size(in, k, s, p, d);
}
API int64_t cnnk_nhwc_offset(int64_t n, int64_t h, int64_t w, int64_t c, int64_t H, int64_t W, int64_t ld) {
  return nhwc_offset(n, h, w, c, H, W, ld);
}
API void cnnk_split_pixel(int64_t m, int64_t Ho, int64_t Wo, int64_t* out) {
  const PixelPos p = split_pixel(m, Ho, Wo);
  out[0] = p.n;
  out[1] = p.h;
  out[2] = p.w;
}
API void cnnk_split_k(int k, int Cg, int kW, int* out) {
  const KPos p = split_k(k, Cg, kW);
  out[0] = p.kh;
  out[1] = p.kw;
  out[2] = p.c;
}
API void cnnk_row_info(int64_t m, int64_t M, int64_t Ho, int64_t Wo, int64_t* out) {
  const RowInfo r = row_info(m, M, Ho, Wo);
  out[0] = r.m;
  out[1] = r.n;
  out[2] = r.h;
  out[3] = r.w;
}
// The gather's hoisted index math for row (m, n, h, w) and column k of group g: out = offset (row.base + col.delta,
// as int64), inside (0/1).
API void cnnk_gather_offset(int64_t m, int64_t n, int64_t h, int64_t w, int k, int g, int64_t H, int64_t W, int64_t ld,
                            int Cg, int kW, int sH, int sW, int pH, int pW, int dH, int dW, int64_t* out) {
  const GatherRow r = gather_row(RowInfo{m, n, h, w}, H, W, ld, sH, sW, pH, pW);
  const GatherCol c = gather_col(k, Cg, kW, dH, dW, W, ld, static_cast<int64_t>(g) * Cg);
  out[0] = static_cast<int64_t>(r.base + c.delta);
  out[1] = gather_inside(r, c, H, W);
}
API int64_t cnnk_halo_origin(int64_t o0, int64_t s, int64_t p) { return halo_origin(o0, s, p); }
API int64_t cnnk_halo_extent(int64_t tile, int64_t s, int64_t k, int64_t d) { return halo_extent(tile, s, k, d); }
API void cnnk_clamp_range(int64_t origin, int64_t extent, int64_t size, int64_t* out) {
  const Range r = clamp_range(origin, extent, size);
  out[0] = r.lo;
  out[1] = r.hi;
}
API float cnnk_act_f32(int act, float v) { return act_apply(static_cast<Act>(act), v); }
API double cnnk_act_f64(int act, double v) { return act_apply(static_cast<Act>(act), v); }
API float cnnk_gate_f32(int gate, float v) { return gate_apply(static_cast<Gate>(gate), v); }
API double cnnk_gate_f64(int gate, double v) { return gate_apply(static_cast<Gate>(gate), v); }
API float cnnk_max_nan_f32(float m, float v) { return max_nan(m, v); }
API int cnnk_chunk_k(int t_bytes) { return chunk_k(t_bytes); }
API void cnnk_constants(int64_t* out) {
  out[0] = kThreads;
  out[1] = kBM;
  out[2] = kBN;
  out[3] = kAlign;
  out[4] = kResidentCap;
  out[5] = sizeof(RowInfo);
  out[6] = sizeof(GatherRow);
}

static void put_plan(const SmemPlan& p, int64_t* out) {
  const int64_t v[] = {p.bk, p.lda, p.ldb, p.ldc, p.lde, p.ldx, p.ldw, p.ldce, p.rows, p.a, p.b, p.e, p.c, p.x, p.w,
                       p.ce, p.a2, p.b2, p.p, p.bytes};
  for (int i = 0; i < 20; ++i) out[i] = v[i];
}

API void cnnk_plan_smem(int t_bytes, int acc_bytes, int64_t k_resident, int64_t halo_pixels, int expand, int a_bufs,
                        int b_bufs, int64_t scratch, int64_t* out) {
  put_plan(plan_smem(t_bytes, acc_bytes, k_resident, halo_pixels, expand != 0, a_bufs, b_bufs, scratch), out);
}

// out: ok, resident, grid_x, grid_y, th, tw, then the 20 SmemPlan fields
static void put_launch(const LaunchPlan& p, int64_t* out) {
  out[0] = p.ok;
  out[1] = p.resident;
  out[2] = p.grid_x;
  out[3] = p.grid_y;
  out[4] = p.th;
  out[5] = p.tw;
  put_plan(p.smem, out + 6);
}

API void cnnk_plan_gemm(int64_t row_tiles, int64_t col_tiles, int64_t K, int t_bytes, int acc_bytes, int sms,
                        int64_t smem_limit, int64_t halo_pixels, int expand, int async_a, int64_t scratch,
                        int pipelined, int64_t* out) {
  put_launch(plan_gemm(row_tiles, col_tiles, K, t_bytes, acc_bytes, sms, smem_limit, halo_pixels, expand != 0,
                       async_a != 0, scratch, pipelined != 0),
             out);
}

API void cnnk_plan_inverted_residual(int64_t N, int64_t Ho, int64_t Wo, int stride, int kH, int kW, int64_t hidden,
                                     int64_t Cout, int expand, int t_bytes, int acc_bytes, int sms, int64_t smem_limit,
                                     int64_t* out) {
  put_launch(plan_inverted_residual(N, Ho, Wo, stride, kH, kW, hidden, Cout, expand != 0, t_bytes, acc_bytes, sms,
                                    smem_limit),
             out);
}

// out: ok, th, tw, cc, IH, IW, grid_x, grid_y, bytes
API void cnnk_plan_depthwise(int64_t N, int64_t Ho, int64_t Wo, int64_t C, int kH, int kW, int sH, int sW, int dH,
                             int dW, int acc_bytes, int64_t smem_limit, int64_t* out) {
  const DepthwisePlan p = plan_depthwise(N, Ho, Wo, C, kH, kW, sH, sW, dH, dW, acc_bytes, smem_limit);
  const int64_t v[] = {p.ok, p.th, p.tw, p.cc, p.IH, p.IW, p.grid_x, p.grid_y, p.bytes};
  for (int i = 0; i < 9; ++i) out[i] = v[i];
}

API void cnnk_plan_dwsep(int64_t N, int64_t Ho, int64_t Wo, int64_t C, int64_t Cout, int kH, int kW, int sH, int sW,
                         int dH, int dW, int t_bytes, int acc_bytes, int sms, int64_t smem_limit, int64_t* out) {
  put_launch(plan_dwsep(N, Ho, Wo, C, Cout, kH, kW, sH, sW, dH, dW, t_bytes, acc_bytes, sms, smem_limit), out);
}
