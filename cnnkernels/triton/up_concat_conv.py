"""cnnkernels::up_concat_conv_triton: act(conv3x3(cat([skip, conv_transpose2x2_s2(input)]))) in one Triton kernel.

A program owns a tile of output pixels of one phase (p, q): pixels (2a + p, 2b + q). For such a tile every 3x3 tap
reads upsampled pixels of a single phase (p', q') at input pixels (a + da, b + db), the same (p', q', da, db) for the
whole tile, so the tap's upsampled tile is one GEMM of the input tile with that tap of the transposed conv's weight.
It is computed in registers (bias added, rounded to the input dtype as the unfused op would store it) and fed
straight to the 3x3 conv's GEMM; the skip channels are loaded directly. Neither the upsampled nor the concatenated
tensor goes to global memory; the price is recomputing each upsampled value for each of the 9 taps that read it.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from cnnkernels.ops._checks import check_up_concat_conv, empty_output
from cnnkernels.triton._common import (ACTIVATION_CODES, acc_zeros, activate, autotune_configs, check_device,
                                       dot_mode, mma, register_like_main_op, round_to, schema, up)

OP = "up_concat_conv"

_CONFIGS = [
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_C": 16, "BLOCK_U": 16}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_C": 32, "BLOCK_U": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_C": 32, "BLOCK_U": 32}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_C": 32, "BLOCK_U": 32}, num_warps=8, num_stages=2),
]


@triton.autotune(configs=autotune_configs(_CONFIGS), key=["M", "CIN", "CSKIP", "CUP", "COUT"])
@triton.jit
def _up_concat_conv_kernel(
        X, S, WU, BU, W, B, Y,
        M, H, W_, CIN, CSKIP, CUP, COUT,
        sxn, sxc, sxh, sxw,
        ssn, ssc, ssh, ssw,
        swu_i, swu_o, swu_h, swu_w,
        sw_o, sw_i, sw_h, sw_w,
        syn, syc, syh, syw,
        HAS_BU: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr, DOT: tl.constexpr, F64: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_U: tl.constexpr):
    """Y[n, co, 2a+p, 2b+q] = ACT(B[co] + sum over the 3x3 taps of W[co, :, kh, kw] . cat(S, U)[n, :, pixel + tap]),
    U = round(X . WU + BU) the transposed conv, zero outside the 2H x 2W map. Program axis 0 walks (phase, pixel
    tile), axis 1 output-channel tiles; M = N * H * W pixels per phase."""
    tiles = tl.cdiv(M, BLOCK_M)
    pid = tl.program_id(0)
    phase = pid // tiles
    p = phase // 2
    q = phase % 2
    offs_m = (pid % tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_mask = offs_m < M
    b = offs_m % W_
    t = offs_m // W_
    a = t % H
    n = (t // H).to(tl.int64)
    ho = 2 * a + p
    wo = 2 * b + q
    co = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = co < COUT
    offs_c = tl.arange(0, BLOCK_C)
    offs_u = tl.arange(0, BLOCK_U)
    acc = acc_zeros(BLOCK_M, BLOCK_N, F64)
    for kh in tl.static_range(3):
        hi = ho - 1 + kh
        # the upsampled row's phase and input row, the same for every pixel of the tile (ho has the tile's phase)
        ph = (p + kh + 1) % 2
        ai = a + (p + kh - 1 - ph) // 2
        for kw in tl.static_range(3):
            wi = wo - 1 + kw
            pw = (q + kw + 1) % 2
            bi = b + (q + kw - 1 - pw) // 2
            pix_ok = m_mask & (hi >= 0) & (hi < 2 * H) & (wi >= 0) & (wi < 2 * W_)
            # skip channels: loaded directly
            s_pix = (S + n * ssn + hi * ssh + wi * ssw)[:, None]
            for c0 in range(0, CSKIP, BLOCK_C):
                cc = c0 + offs_c
                c_mask = cc < CSKIP
                sa = tl.load(s_pix + (cc.to(tl.int64) * ssc)[None, :], mask=pix_ok[:, None] & c_mask[None, :],
                             other=0.0)
                wt = tl.load(W + (co * sw_o)[None, :] + (cc * sw_i)[:, None] + kh * sw_h + kw * sw_w,
                             mask=c_mask[:, None] & n_mask[None, :], other=0.0)
                acc = mma(sa, wt, acc, Y, DOT)
            # upsampled channels: this tap's upsampled tile by a GEMM over the input channels, then the conv's GEMM
            x_pix = (X + n * sxn + ai * sxh + bi * sxw)[:, None]
            for u0 in range(0, CUP, BLOCK_U):
                uu = u0 + offs_u
                u_mask = uu < CUP
                e = acc_zeros(BLOCK_M, BLOCK_U, F64)
                for c0 in range(0, CIN, BLOCK_C):
                    cc = c0 + offs_c
                    c_mask = cc < CIN
                    xa = tl.load(x_pix + (cc.to(tl.int64) * sxc)[None, :], mask=pix_ok[:, None] & c_mask[None, :],
                                 other=0.0)
                    wu = tl.load(WU + (cc * swu_i)[:, None] + (uu * swu_o)[None, :] + ph * swu_h + pw * swu_w,
                                 mask=c_mask[:, None] & u_mask[None, :], other=0.0)
                    e = mma(xa, wu, e, Y, DOT)
                if HAS_BU:
                    e += up(tl.load(BU + uu, mask=u_mask, other=0.0), F64)[None, :]
                # the 3x3 conv pads the upsampled map with zeros (no bias there)
                e = tl.where(pix_ok[:, None], round_to(e, Y, F64), 0.0)
                wt = tl.load(W + (co * sw_o)[None, :] + ((CSKIP + uu) * sw_i)[:, None] + kh * sw_h + kw * sw_w,
                             mask=u_mask[:, None] & n_mask[None, :], other=0.0)
                acc = mma(e, wt, acc, Y, DOT)
    if HAS_B:
        acc += up(tl.load(B + co, mask=n_mask, other=0.0), F64)[None, :]
    acc = activate(acc, ACT)
    y_off = (n * syn + ho * syh + wo * syw)[:, None] + (co.to(tl.int64) * syc)[None, :]
    tl.store(Y + y_off, acc.to(Y.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


@triton_op("cnnkernels::up_concat_conv_triton", mutates_args=(), schema=schema(OP))
def up_concat_conv_triton(input: torch.Tensor, skip: torch.Tensor, up_weight: torch.Tensor,
                          up_bias: Optional[torch.Tensor], weight: torch.Tensor, bias: Optional[torch.Tensor],
                          activation: str) -> torch.Tensor:
    shape = check_up_concat_conv(input, skip, up_weight, up_bias, weight, bias, activation)
    check_device(OP, input)
    out = empty_output(input, shape)
    N, C, H, W = input.shape
    M = N * H * W
    if M == 0:
        return out
    cout = weight.shape[0]

    def grid(meta):
        return (4 * triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(cout, meta["BLOCK_N"]))

    dummy = weight  # stands in for absent optional tensors (never read)
    wrap_triton(_up_concat_conv_kernel)[grid](
        input, skip, up_weight, up_bias if up_bias is not None else dummy, weight,
        bias if bias is not None else dummy, out,
        M, H, W, C, skip.shape[1], up_weight.shape[1], cout,
        *input.stride(), *skip.stride(), *up_weight.stride(), *weight.stride(), *out.stride(),
        HAS_BU=up_bias is not None, HAS_B=bias is not None, ACT=ACTIVATION_CODES[activation],
        DOT=dot_mode(input.dtype), F64=input.dtype == torch.float64)
    return out


register_like_main_op(OP)
