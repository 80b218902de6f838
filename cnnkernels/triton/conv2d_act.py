"""cnnkernels::conv2d_act_triton: act(conv2d(input, weight, bias) + residual) with bias, residual and activation in
the epilogue of one Triton kernel.

Two kernels:
- `_conv_gemm_kernel`, an implicit GEMM: rows are output pixels (N*Ho*Wo), columns the output channels of one group,
  the reduction runs over (kh, kw, input channel) with tl.dot on [pixels x channels] tiles gathered from the input.
  NHWC (channels_last) input makes the channel tiles contiguous; NCHW works too (every tensor is addressed through its
  strides, so no layout copies are made). It also serves inception_block: it can write into / read from a channel
  slice of a wider tensor (Y_C0 / X_C0), and with POOL it max-pools the input 3x3/s1/p1 while gathering it (the pool
  branch's maxpool fused into its 1x1 conv). With HAS_GATE it scales each input channel of each image by G[n, c] as it
  loads the input: mbconv's projection, applying the squeeze-and-excitation gate on the fly.
- `_conv_dw_kernel` for depthwise convs (groups == C_in, one input channel per group), where a GEMM would be 1 deep:
  a direct conv over [pixels x channels] tiles, the filters as vectors.
"""

from __future__ import annotations

from typing import List, Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from cnnkernels.ops._checks import check_conv2d_act, empty_output
from cnnkernels.triton._common import (ACTIVATION_CODES, acc_zeros, activate, autotune_configs, check_device,
                                       dot_mode, mma, register_like_main_op, schema, up)

OP = "conv2d_act"

_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 16}, num_warps=2, num_stages=3),
]

_DW_CONFIGS = [
    triton.Config({"BLOCK_M": 32, "BLOCK_C": 32}, num_warps=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_C": 64}, num_warps=4),
    triton.Config({"BLOCK_M": 16, "BLOCK_C": 128}, num_warps=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_C": 32}, num_warps=8),
]


@triton.jit
def pixel_coords(pid, M, Ho, Wo, BLOCK_M: tl.constexpr):
    """Rows of a tile of output pixels, flattened over (n, ho, wo): the indices and the row mask."""
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    wo = offs_m % Wo
    t = offs_m // Wo
    ho = t % Ho
    n = (t // Ho).to(tl.int64)
    return n, ho, wo, m_mask


@triton.jit
def conv_epilogue(acc, n, ho, wo, m_mask, co, n_mask, B, R, Y, Y_C0, srn, src, srh, srw, syn, syc, syh, syw,
                  HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr, F64: tl.constexpr):
    """acc[pixels, channels] + bias + residual -> activation -> store at Y[n, Y_C0 + co, ho, wo]."""
    mask = m_mask[:, None] & n_mask[None, :]
    if HAS_BIAS:
        acc += up(tl.load(B + co, mask=n_mask, other=0.0), F64)[None, :]
    if HAS_RES:
        r_off = (n * srn + ho * srh + wo * srw)[:, None] + (co * src)[None, :]
        acc += up(tl.load(R + r_off, mask=mask, other=0.0), F64)
    acc = activate(acc, ACT)
    y_off = (n * syn + ho * syh + wo * syw)[:, None] + ((Y_C0 + co).to(tl.int64) * syc)[None, :]
    tl.store(Y + y_off, acc.to(Y.dtype.element_ty), mask=mask)


@triton.autotune(configs=autotune_configs(_GEMM_CONFIGS), key=["M", "CIN_G", "COUT_G", "KH", "KW"])
@triton.jit
def _conv_gemm_kernel(
        X, Wt, B, R, Y, G,
        M, H, W, Ho, Wo, CIN_G, COUT_G, X_C0, Y_C0,
        sxn, sxc, sxh, sxw,
        swo, swi, swh, sww,
        srn, src, srh, srw,
        syn, syc, syh, syw,
        sgn,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
        POOL: tl.constexpr, HAS_GATE: tl.constexpr, DOT: tl.constexpr, F64: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    g = tl.program_id(2)
    n, ho, wo, m_mask = pixel_coords(tl.program_id(0), M, Ho, Wo, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < COUT_G
    co = g * COUT_G + offs_n
    offs_k = tl.arange(0, BLOCK_K)
    x_img = X + n * sxn                                      # [BLOCK_M] pointers to each row's image
    w_co = Wt + co.to(tl.int64) * swo                        # [BLOCK_N] pointers to each column's filter
    c_first = X_C0 + g * CIN_G                               # first input channel of this group
    acc = acc_zeros(BLOCK_M, BLOCK_N, F64)
    for kh in tl.static_range(KH):
        hi = ho * stride_h - pad_h + kh * dil_h
        for kw in tl.static_range(KW):
            wi = wo * stride_w - pad_w + kw * dil_w
            pix_ok = m_mask & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
            x_pix = x_img + hi * sxh + wi * sxw
            for k0 in range(0, CIN_G, BLOCK_K):
                ci = k0 + offs_k
                k_mask = ci < CIN_G
                c_off = ((c_first + ci).to(tl.int64) * sxc)[None, :]
                if POOL:
                    # max_pool2d(3, stride 1, padding 1) of the input, gathered for this 1x1 conv's tile
                    a = up(tl.full([BLOCK_M, BLOCK_K], float("-inf"), tl.float32), F64)
                    for dh in tl.static_range(3):
                        for dw in tl.static_range(3):
                            h2 = hi + (dh - 1)
                            w2 = wi + (dw - 1)
                            ok = m_mask & (h2 >= 0) & (h2 < H) & (w2 >= 0) & (w2 < W)
                            v = tl.load((x_img + h2 * sxh + w2 * sxw)[:, None] + c_off,
                                        mask=ok[:, None] & k_mask[None, :], other=float("-inf"))
                            a = tl.maximum(a, up(v, F64), propagate_nan=tl.PropagateNan.ALL)
                    a = tl.where(m_mask[:, None] & k_mask[None, :], a, 0.0)
                else:
                    a = tl.load(x_pix[:, None] + c_off, mask=pix_ok[:, None] & k_mask[None, :], other=0.0)
                if HAS_GATE:
                    scale = tl.load(G + (n * sgn)[:, None] + (c_first + ci)[None, :],
                                    mask=m_mask[:, None] & k_mask[None, :], other=0.0)
                    a = up(a, F64) * up(scale, F64)
                b = tl.load(w_co[None, :] + (ci * swi + kh * swh + kw * sww)[:, None],
                            mask=k_mask[:, None] & n_mask[None, :], other=0.0)
                acc = mma(a, b, acc, Y, DOT)
    conv_epilogue(acc, n, ho, wo, m_mask, co, n_mask, B, R, Y, Y_C0, srn, src, srh, srw, syn, syc, syh, syw,
                  HAS_BIAS, HAS_RES, ACT, F64)


@triton.jit
def depthwise_tile(x_img, ho, wo, m_mask, ci, c_mask, Wt, w_off, swh, sww, H, W, sxc, sxh, sxw,
                   stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                   KH: tl.constexpr, KW: tl.constexpr, F64: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """sum over (kh, kw) of x[n, ci, ho*s - p + kh*d, wo*s - p + kw*d] * Wt[w_off + kh*swh + kw*sww]: a
    [pixels x channels] tile of a depthwise conv (no bias), in registers."""
    acc = acc_zeros(BLOCK_M, BLOCK_C, F64)
    c_off = (ci.to(tl.int64) * sxc)[None, :]
    for kh in tl.static_range(KH):
        hi = ho * stride_h - pad_h + kh * dil_h
        for kw in tl.static_range(KW):
            wi = wo * stride_w - pad_w + kw * dil_w
            pix_ok = m_mask & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
            x = tl.load((x_img + hi * sxh + wi * sxw)[:, None] + c_off, mask=pix_ok[:, None] & c_mask[None, :],
                        other=0.0)
            w = tl.load(Wt + w_off + kh * swh + kw * sww, mask=c_mask, other=0.0)
            acc += up(x, F64) * up(w, F64)[None, :]
    return acc


@triton.autotune(configs=autotune_configs(_DW_CONFIGS), key=["M", "COUT", "KH", "KW"])
@triton.jit
def _conv_dw_kernel(
        X, Wt, B, R, Y,
        M, H, W, Ho, Wo, COUT, MULT,
        sxn, sxc, sxh, sxw,
        swo, swh, sww,
        srn, src, srh, srw,
        syn, syc, syh, syw,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
        F64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    n, ho, wo, m_mask = pixel_coords(tl.program_id(0), M, Ho, Wo, BLOCK_M)
    co = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_mask = co < COUT
    acc = depthwise_tile(X + n * sxn, ho, wo, m_mask, co // MULT, c_mask, Wt, co.to(tl.int64) * swo, swh, sww,
                         H, W, sxc, sxh, sxw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                         KH, KW, F64, BLOCK_M, BLOCK_C)
    conv_epilogue(acc, n, ho, wo, m_mask, co, c_mask, B, R, Y, 0, srn, src, srh, srw, syn, syc, syh, syw,
                  HAS_BIAS, HAS_RES, ACT, F64)


def _strides(t: Optional[torch.Tensor]):
    return tuple(t.stride()) if t is not None else (0, 0, 0, 0)


def conv_into(out: torch.Tensor, out_c0: int, input: torch.Tensor, in_c0: int, cin: int, weight: torch.Tensor,
              bias: Optional[torch.Tensor], residual: Optional[torch.Tensor], stride, padding, dilation, groups: int,
              activation: str, pool: bool = False, gate: Optional[torch.Tensor] = None) -> None:
    """Launches the conv of input[:, in_c0:in_c0+cin] into out[:, out_c0:out_c0+Cout] (both addressed through their
    strides, no copies): act(conv2d(x, weight, bias, ...) + residual), or with `pool` a 1x1 conv of
    max_pool2d(x, 3, 1, 1), or with `gate` (contiguous [N, channels of input]) the conv of x * gate[:, :, None, None].
    The shapes must have been validated."""
    N, _, H, W = input.shape
    cout, cin_g, kh, kw = weight.shape
    Ho, Wo = out.shape[2], out.shape[3]
    M = N * Ho * Wo
    if M == 0 or cout == 0:
        return
    dummy = weight  # stands in for absent optional tensors (never read: HAS_BIAS / HAS_RES are False)
    common = dict(HAS_BIAS=bias is not None, HAS_RES=residual is not None, ACT=ACTIVATION_CODES[activation],
                  F64=input.dtype == torch.float64)
    geom = (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])
    if groups == cin and cin_g == 1 and groups > 1 and not pool and gate is None and in_c0 == 0 and out_c0 == 0:
        mult = cout // groups

        def grid(meta):
            return (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(cout, meta["BLOCK_C"]))

        wrap_triton(_conv_dw_kernel)[grid](
            input, weight, bias if bias is not None else dummy, residual if residual is not None else dummy, out,
            M, H, W, Ho, Wo, cout, mult,
            *input.stride(), weight.stride(0), weight.stride(2), weight.stride(3),
            *_strides(residual), *out.stride(), *geom, KH=kh, KW=kw, **common)
        return
    cout_g = cout // groups

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(cout_g, meta["BLOCK_N"]), groups)

    wrap_triton(_conv_gemm_kernel)[grid](
        input, weight, bias if bias is not None else dummy, residual if residual is not None else dummy, out,
        gate if gate is not None else dummy,
        M, H, W, Ho, Wo, cin_g, cout_g, in_c0, out_c0,
        *input.stride(), *weight.stride(), *_strides(residual), *out.stride(),
        gate.stride(0) if gate is not None else 0, *geom,
        KH=kh, KW=kw, POOL=pool, HAS_GATE=gate is not None, DOT=dot_mode(input.dtype), **common)


@triton_op("cnnkernels::conv2d_act_triton", mutates_args=(), schema=schema(OP))
def conv2d_act_triton(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      residual: Optional[torch.Tensor], stride: List[int], padding: List[int], dilation: List[int],
                      groups: int, activation: str) -> torch.Tensor:
    g = check_conv2d_act(input, weight, bias, residual, stride, padding, dilation, groups, activation)
    check_device(OP, input)
    out = empty_output(input, (g.N, g.Cout, g.Ho, g.Wo))
    conv_into(out, 0, input, 0, g.C, weight, bias, residual, stride, padding, dilation, groups, activation)
    return out


register_like_main_op(OP)
