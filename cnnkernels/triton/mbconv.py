"""cnnkernels::mbconv_triton: the EfficientNet / MobileNet v3 block (expand 1x1 -> act -> depthwise kxk -> act ->
squeeze-and-excitation gate -> project 1x1 (+ input)).

Without SE it is inverted_residual's single fused kernel. With SE it cannot be one pass: the gate of an image needs
the mean of its whole depthwise output before any of it can be projected. So three kernels:

1. `_dw_sum_kernel` computes the depthwise output D over TILE_H x TILE_W tiles of an image (with an expansion, as in
   inverted_residual's kernel: expanded once per tile halo into a per-program scratch slice, never as a whole
   tensor), writes it to a channels_last scratch tensor in the input dtype (what the unfused block would store) and
   each tile's per-channel sums to a partial-sum buffer. Partial sums rather than atomic adds: the result does not
   depend on the order the tiles run in, and the autotuner's repeated launches are harmless.
2. `_se_gate_kernel`, one program per image: the mean over the tiles' sums, the two small FCs, the activation and
   the gate, G[n, channel].
3. conv2d_act's `_conv_gemm_kernel` as the 1x1 projection of D with HAS_GATE (D scaled by G as it is loaded), bias
   and the block input added in its epilogue.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from cnnkernels.ops._checks import check_mbconv, empty_output
from cnnkernels.triton._common import (ACTIVATION_CODES, GATE_CODES, activate, autotune_configs, check_device,
                                       dot_mode, gate, register_like_main_op, round_to, schema, up)
from cnnkernels.triton.conv2d_act import conv_into
from cnnkernels.triton.dwsep_conv2d import dw_act_tile
from cnnkernels.triton.inverted_residual import (dw_act_from_halo, halo_scratch, inverted_residual_into,
                                                 persistent_programs, program_scratch, spatial_tile, tile_count)

OP = "mbconv"

_DW_CONFIGS = [
    triton.Config({"TILE_H": 4, "TILE_W": 8, "BLOCK_H": 32, "BLOCK_C": 16, "BLOCK_E": 32}, num_warps=4, num_stages=2),
    triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_H": 32, "BLOCK_C": 32, "BLOCK_E": 64}, num_warps=4, num_stages=2),
    triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_H": 64, "BLOCK_C": 32, "BLOCK_E": 64}, num_warps=4, num_stages=2),
    triton.Config({"TILE_H": 8, "TILE_W": 16, "BLOCK_H": 32, "BLOCK_C": 32, "BLOCK_E": 64}, num_warps=8,
                  num_stages=2),
    triton.Config({"TILE_H": 16, "TILE_W": 8, "BLOCK_H": 64, "BLOCK_C": 16, "BLOCK_E": 64}, num_warps=8,
                  num_stages=2),
]


@triton.autotune(configs=autotune_configs(_DW_CONFIGS), key=["Ho", "Wo", "C", "HID", "KH", "STRIDE"])
@triton.jit
def _dw_sum_kernel(
        X, WE, BE, WD, BD, D, P, SCR,
        N, H, W, Ho, Wo, C, HID,
        sxn, sxc, sxh, sxw,
        swe_o, swe_i,
        swd_c, swd_h, swd_w,
        sdn, sdc, sdh, sdw,
        spn, spt,
        STRIDE, pad,
        KH: tl.constexpr, HAS_EXPAND: tl.constexpr, HAS_BE: tl.constexpr, ACT: tl.constexpr,
        DOT: tl.constexpr, F64: tl.constexpr,
        TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_E: tl.constexpr):
    """D[n, h, ho, wo] = ACT(depthwise_KHxKH(E)[h] + BD[h]) (E: the expansion, or the input without one) and
    P[n, t, h] = the sum of D[n, h] over the pixels of tile t. A persistent grid (inverted_residual's
    `persistent_programs`): program p takes the items p, p + programs, ... of the (image, hidden block, tile) list."""
    tiles = tl.cdiv(Ho, TILE_H) * tl.cdiv(Wo, TILE_W)
    hblocks = tl.cdiv(HID, BLOCK_H)
    s_prog = program_scratch(SCR, tl.program_id(0), STRIDE, Ho, Wo, KH, KH, TILE_H, TILE_W, BLOCK_H)
    for work in range(tl.program_id(0), N * hblocks * tiles, tl.num_programs(0)):
        t = work % tiles
        hh0 = ((work // tiles) % hblocks) * BLOCK_H
        n = (work // (tiles * hblocks)).to(tl.int64)
        h0, w0, lh, lw, ho, wo, m_mask = spatial_tile(t, Ho, Wo, TILE_H, TILE_W)
        hh = hh0 + tl.arange(0, BLOCK_H)
        h_mask = hh < HID
        x_img = X + n * sxn
        if HAS_EXPAND:
            # the previous item's taps may still be reading the buffer this item writes
            tl.debug_barrier()
            d = dw_act_from_halo(s_prog, x_img, h0, w0, lh, lw, hh0, hh, h_mask, WE, BE, WD, BD, D, H, W, Ho, Wo, C,
                                 sxc, sxh, sxw, swe_o, swe_i, swd_c, swd_h, swd_w, STRIDE, pad, KH, KH, HAS_BE, True,
                                 ACT, ACT, DOT, F64, TILE_H, TILE_W, BLOCK_E, BLOCK_H, BLOCK_C)
        else:
            d = dw_act_tile(x_img, ho, wo, m_mask, hh, h_mask, WD, BD, D, H, W, sxc, sxh, sxw, swd_c, swd_h, swd_w,
                            STRIDE, STRIDE, pad, pad, 1, 1, KH, KH, True, ACT, F64, TILE_H * TILE_W, BLOCK_H)
        # recomputed rather than held in registers through the expansion
        _, _, _, _, ho, wo, m_mask = spatial_tile(t, Ho, Wo, TILE_H, TILE_W)
        mask = m_mask[:, None] & h_mask[None, :]
        d_off = (n * sdn + ho * sdh + wo * sdw)[:, None] + (hh.to(tl.int64) * sdc)[None, :]
        tl.store(D + d_off, d.to(D.dtype.element_ty), mask=mask)
        # rows past the image hold values of the padding or of other pixels, not zeros
        part = tl.sum(tl.where(mask, d, 0.0), axis=0)
        tl.store(P + n * spn + t * spt + hh, part, mask=h_mask)


@triton.jit
def _se_gate_kernel(
        P, WR, BR, WX, BX, G, D,
        T, HID, S, HOWO,
        spn, spt, swr_o, swr_i, swx_o, swx_i, sgn,
        SE_ACT: tl.constexpr, GATE: tl.constexpr, F64: tl.constexpr,
        BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_S: tl.constexpr):
    """G[n, h] = GATE(sum_s WX[h, s] * r[s] + BX[h]) with r = SE_ACT(sum_h WR[s, h] * mean[h] + BR[s]) and mean[h]
    = sum_t P[n, t, h] / HOWO, one program per image, the whole squeeze vector in one block (BLOCK_S >= S). Each
    intermediate is rounded to D's element type, as the unfused block stores it."""
    n = tl.program_id(0).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    offs_t = tl.arange(0, BLOCK_T)
    ss = tl.arange(0, BLOCK_S)
    s_mask = ss < S
    r = up(tl.zeros([BLOCK_S], dtype=tl.float32), F64)
    for h0 in range(0, HID, BLOCK_H):
        hh = h0 + offs_h
        h_mask = hh < HID
        total = up(tl.zeros([BLOCK_H], dtype=tl.float32), F64)
        for t0 in range(0, T, BLOCK_T):
            tt = t0 + offs_t
            p = tl.load(P + n * spn + (tt * spt)[:, None] + hh[None, :], mask=(tt < T)[:, None] & h_mask[None, :],
                        other=0.0)
            total += tl.sum(p, axis=0)
        mean = round_to(total / HOWO, D, F64)
        wr = up(tl.load(WR + (ss * swr_o)[:, None] + (hh * swr_i)[None, :], mask=s_mask[:, None] & h_mask[None, :],
                        other=0.0), F64)
        r += tl.sum(wr * mean[None, :], axis=1)
    r += up(tl.load(BR + ss, mask=s_mask, other=0.0), F64)
    # squeeze channels past S hold act(0) = 0 and meet zero weights
    r = round_to(activate(r, SE_ACT), D, F64)
    for h0 in range(0, HID, BLOCK_H):
        hh = h0 + offs_h
        h_mask = hh < HID
        wx = up(tl.load(WX + (hh * swx_o)[:, None] + (ss * swx_i)[None, :], mask=h_mask[:, None] & s_mask[None, :],
                        other=0.0), F64)
        z = tl.sum(wx * r[None, :], axis=1) + up(tl.load(BX + hh, mask=h_mask, other=0.0), F64)
        tl.store(G + n * sgn + hh, round_to(gate(z, GATE), D, F64), mask=h_mask)


def _depthwise_and_sums(input, expand_weight, expand_bias, dw_weight, dw_bias, stride, activation):
    """(D, P): the depthwise output (channels_last scratch in the input dtype) and the per-tile channel sums."""
    N, C, H, W = input.shape
    hid, k = dw_weight.shape[0], dw_weight.shape[2]
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    acc_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    d = torch.empty((N, hid, Ho, Wo), dtype=input.dtype, device=input.device, memory_format=torch.channels_last)
    # a row per tile of the config with the most tiles; zeros: the rows the chosen config does not reach add nothing
    configs = _dw_sum_kernel.configs
    p = torch.zeros((N, max(tile_count(Ho, Wo, c.kwargs) for c in configs), hid), dtype=acc_dtype,
                    device=input.device)
    expand = expand_weight is not None
    we = expand_weight if expand else dw_weight   # stands in when absent (never read)

    def programs(meta):
        return persistent_programs(tile_count(Ho, Wo, meta) * triton.cdiv(hid, meta["BLOCK_H"]) * N, input.device)

    def grid(meta):
        return (programs(meta),)

    scratch = halo_scratch(configs, programs, Ho, Wo, stride, k, input) if expand else d
    wrap_triton(_dw_sum_kernel)[grid](
        input, we, expand_bias if expand_bias is not None else dw_weight, dw_weight, dw_bias, d, p, scratch,
        N, H, W, Ho, Wo, C, hid,
        *input.stride(), we.stride(0), we.stride(1), dw_weight.stride(0), dw_weight.stride(2), dw_weight.stride(3),
        *d.stride(), p.stride(0), p.stride(1), stride, k // 2,
        KH=k, HAS_EXPAND=expand, HAS_BE=expand_bias is not None,
        ACT=ACTIVATION_CODES[activation], DOT=dot_mode(input.dtype), F64=input.dtype == torch.float64)
    return d, p


def _se_gate(d, p, se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias, se_activation, se_gate):
    """G [N, hidden] (fp32, fp64 for fp64): the SE gate of each image and channel of the depthwise output d."""
    N, hid = d.shape[0], d.shape[1]
    squeeze = se_reduce_weight.shape[0]
    g = torch.empty((N, hid), dtype=p.dtype, device=d.device)
    wrap_triton(_se_gate_kernel)[(N,)](
        p, se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias, g, d,
        p.shape[1], hid, squeeze, d.shape[2] * d.shape[3],
        p.stride(0), p.stride(1), se_reduce_weight.stride(0), se_reduce_weight.stride(1),
        se_expand_weight.stride(0), se_expand_weight.stride(1), g.stride(0),
        SE_ACT=ACTIVATION_CODES[se_activation], GATE=GATE_CODES[se_gate], F64=d.dtype == torch.float64,
        BLOCK_T=8, BLOCK_H=32, BLOCK_S=triton.next_power_of_2(squeeze))
    return g


@triton_op("cnnkernels::mbconv_triton", mutates_args=(), schema=schema(OP))
def mbconv_triton(input: torch.Tensor, expand_weight: Optional[torch.Tensor], expand_bias: Optional[torch.Tensor],
                  dw_weight: torch.Tensor, dw_bias: torch.Tensor, se_reduce_weight: Optional[torch.Tensor],
                  se_reduce_bias: Optional[torch.Tensor], se_expand_weight: Optional[torch.Tensor],
                  se_expand_bias: Optional[torch.Tensor], project_weight: torch.Tensor, project_bias: torch.Tensor,
                  stride: int, residual: bool, activation: str, se_activation: str, se_gate: str) -> torch.Tensor:
    shape = check_mbconv(input, expand_weight, expand_bias, dw_weight, dw_bias, se_reduce_weight, se_reduce_bias,
                         se_expand_weight, se_expand_bias, project_weight, project_bias, stride, residual, activation,
                         se_activation, se_gate)
    check_device(OP, input)
    out = empty_output(input, shape)
    if out.numel() == 0:
        return out
    if se_reduce_weight is None:
        inverted_residual_into(out, input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                               project_bias, stride, residual, activation)
        return out
    d, p = _depthwise_and_sums(input, expand_weight, expand_bias, dw_weight, dw_bias, stride, activation)
    g = _se_gate(d, p, se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias, se_activation, se_gate)
    conv_into(out, 0, d, 0, d.shape[1], project_weight, project_bias, input if residual else None, [1, 1], [0, 0],
              [1, 1], 1, "none", gate=g)
    return out


register_like_main_op(OP)
