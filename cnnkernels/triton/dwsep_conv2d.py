"""cnnkernels::dwsep_conv2d_triton: pw_act(conv1x1(dw_act(depthwise_conv2d(input)))) in one Triton kernel.

`_dw_pw_kernel` tiles the output over [output pixels x output channels]. For each block of depthwise channels it
computes the depthwise tile [pixels x channels] in registers (bias, activation, rounded to the input dtype as the
unfused op would store it) and feeds it straight to the 1x1 GEMM with tl.dot: the depthwise output never goes to
global memory. The same kernel serves inverted_residual and mbconv without an expansion, with HAS_RES adding the
block input (with an expansion they run inverted_residual's halo kernel).
"""

from __future__ import annotations

from typing import List, Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from cnnkernels.ops._checks import check_dwsep_conv2d, empty_output
from cnnkernels.triton._common import (ACTIVATION_CODES, acc_zeros, activate, autotune_configs, check_device,
                                       dot_mode, mma, register_like_main_op, round_to, schema, up)
from cnnkernels.triton.conv2d_act import depthwise_tile, pixel_coords

OP = "dwsep_conv2d"

_CONFIGS = [
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_H": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_H": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_H": 32}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_H": 32}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_H": 16}, num_warps=8, num_stages=2),
]


@triton.jit
def dw_act_tile(x_img, ho, wo, m_mask, hh, h_mask, WD, BD, Y, H, W, sxc, sxh, sxw, swd_c, swd_h, swd_w,
                stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                KH: tl.constexpr, KW: tl.constexpr, HAS_BD: tl.constexpr, DW_ACT: tl.constexpr, F64: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
    """The [pixels x BLOCK_H] tile D = DW_ACT(depthwise_KHxKW(X)[hh] + BD[hh]) of the image at x_img, rounded to Y's
    element type as the unfused op would store it. Channels past the mask hold act(0) = 0; rows past m_mask hold
    garbage."""
    d = depthwise_tile(x_img, ho, wo, m_mask, hh, h_mask, WD, hh * swd_c, swd_h, swd_w, H, W, sxc, sxh, sxw,
                       stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, KH, KW, F64, BLOCK_M, BLOCK_H)
    if HAS_BD:
        d += up(tl.load(BD + hh, mask=h_mask, other=0.0), F64)[None, :]
    return round_to(activate(d, DW_ACT), Y, F64)


@triton.autotune(configs=autotune_configs(_CONFIGS), key=["M", "HID", "COUT", "KH", "KW"])
@triton.jit
def _dw_pw_kernel(
        X, WD, BD, WP, BP, Y,
        M, H, W, Ho, Wo, HID, COUT,
        sxn, sxc, sxh, sxw,
        swd_c, swd_h, swd_w,
        swp_o, swp_i,
        syn, syc, syh, syw,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, HAS_BD: tl.constexpr, HAS_BP: tl.constexpr,
        HAS_RES: tl.constexpr, DW_ACT: tl.constexpr, PW_ACT: tl.constexpr, DOT: tl.constexpr, F64: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr):
    """Y[n, co, ho, wo] = PW_ACT(sum_h WP[co, h] * D[h] + BP[co]) (+ X[n, co, ho, wo] with HAS_RES), D as in
    `dw_act_tile`."""
    n, ho, wo, m_mask = pixel_coords(tl.program_id(0), M, Ho, Wo, BLOCK_M)
    co = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = co < COUT
    x_img = X + n * sxn
    offs_h = tl.arange(0, BLOCK_H)
    acc = acc_zeros(BLOCK_M, BLOCK_N, F64)
    for h0 in range(0, HID, BLOCK_H):
        hh = h0 + offs_h
        h_mask = hh < HID
        d = dw_act_tile(x_img, ho, wo, m_mask, hh, h_mask, WD, BD, Y, H, W, sxc, sxh, sxw, swd_c, swd_h, swd_w,
                        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, KH, KW, HAS_BD, DW_ACT, F64, BLOCK_M, BLOCK_H)
        # channels past HID hold act(0) = 0 and meet zero pointwise weights
        wp = tl.load(WP + (co * swp_o)[None, :] + (hh * swp_i)[:, None], mask=h_mask[:, None] & n_mask[None, :],
                     other=0.0)
        acc = mma(d, wp, acc, Y, DOT)
    mask = m_mask[:, None] & n_mask[None, :]
    if HAS_BP:
        acc += up(tl.load(BP + co, mask=n_mask, other=0.0), F64)[None, :]
    acc = activate(acc, PW_ACT)
    if HAS_RES:
        acc += up(tl.load((x_img + ho * sxh + wo * sxw)[:, None] + (co.to(tl.int64) * sxc)[None, :], mask=mask,
                          other=0.0), F64)
    y_off = (n * syn + ho * syh + wo * syw)[:, None] + (co.to(tl.int64) * syc)[None, :]
    tl.store(Y + y_off, acc.to(Y.dtype.element_ty), mask=mask)


def dw_pw_into(out: torch.Tensor, input: torch.Tensor, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor],
               pw_weight: torch.Tensor, pw_bias: Optional[torch.Tensor], stride, padding, dilation, dw_act: str,
               pw_act: str, residual: bool) -> None:
    """Launches the fused depthwise -> pointwise kernel writing `out` (validated shapes)."""
    N, C, H, W = input.shape
    cout = pw_weight.shape[0]
    Ho, Wo = out.shape[2], out.shape[3]
    M = N * Ho * Wo
    if M == 0:
        return
    dummy = dw_weight  # stands in for absent optional tensors (never read)

    def grid(meta):
        return (triton.cdiv(M, meta["BLOCK_M"]), triton.cdiv(cout, meta["BLOCK_N"]))

    wrap_triton(_dw_pw_kernel)[grid](
        input, dw_weight, dw_bias if dw_bias is not None else dummy, pw_weight,
        pw_bias if pw_bias is not None else dummy, out,
        M, H, W, Ho, Wo, C, cout,
        *input.stride(), dw_weight.stride(0), dw_weight.stride(2), dw_weight.stride(3),
        pw_weight.stride(0), pw_weight.stride(1), *out.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        KH=dw_weight.shape[2], KW=dw_weight.shape[3], HAS_BD=dw_bias is not None, HAS_BP=pw_bias is not None,
        HAS_RES=residual, DW_ACT=ACTIVATION_CODES[dw_act], PW_ACT=ACTIVATION_CODES[pw_act],
        DOT=dot_mode(input.dtype), F64=input.dtype == torch.float64)


@triton_op("cnnkernels::dwsep_conv2d_triton", mutates_args=(), schema=schema(OP))
def dwsep_conv2d_triton(input: torch.Tensor, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor],
                        pw_weight: torch.Tensor, pw_bias: Optional[torch.Tensor], stride: List[int],
                        padding: List[int], dilation: List[int], dw_activation: str,
                        pw_activation: str) -> torch.Tensor:
    shape = check_dwsep_conv2d(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, dw_activation,
                               pw_activation)
    check_device(OP, input)
    out = empty_output(input, shape)
    dw_pw_into(out, input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, dw_activation,
               pw_activation, False)
    return out


register_like_main_op(OP)
