"""cnnkernels::inverted_residual_triton: the MobileNetV2 block (expand 1x1 -> act -> depthwise kxk -> act -> project
1x1 (+ input)) as one Triton kernel. Neither intermediate is ever stored whole: the depthwise tile stays in
registers, the expanded activations pass through a scratch of one tile halo per program.

With an expansion, `_expand_dw_pw_kernel` works on [TILE_H x TILE_W pixels of one image x BLOCK_N output channels].
Per block of BLOCK_H hidden channels it computes the expanded activations once for the tile's input halo,
((TILE_H-1)*s + k) x ((TILE_W-1)*s + k) pixels, as GEMMs of BLOCK_E halo pixels at a time (`expand_halo`), and takes
the depthwise taps from them (`dw_act_from_halo`); the depthwise tile then feeds the projection GEMM. The expansion
work per output pixel is halo / tile pixels (1.6x for an 8x8 tile, 3x3, stride 1; the unfused op's 4x at stride 2
becomes 4.5x) instead of k*k (9x, 25x for 5x5) when it was recomputed at each tap; it is still repeated for each
output channel block of a tile (one for up to 64 or 128 output channels).

Triton has no addressable shared memory and cannot index a register tile by a computed row, so the halo goes through
a per-program scratch slice in global memory, written and read back by the same program between barriers (bar.sync
orders global memory within a block); two buffers alternate over the hidden blocks, so one barrier per block
suffices. The grid is persistent (4 programs per SM, each looping over work items), which bounds the scratch a
launch touches to programs x 2 x halo x BLOCK_H elements whatever the batch: 6.8 MB on a 132-SM GPU for 8x8 fp16
tiles, 3x3, stride 1 (19.5 MB at stride 2), within L2; the allocation covers the largest config (38 MB for 8x16
tiles at stride 2). One program per tile would make it grow with the batch, to the expanded tensor's own size at 96
hidden channels. tl.gather on a register tile was the
alternative: it needs the whole halo in one power-of-two tile (a 3x3 stride-2 halo of an 8x8 tile is 289 pixels: a
512-row tile), where the scratch takes it in chunks of any count.

Without an expansion the block is dwsep_conv2d's `_dw_pw_kernel` with the block input added in its epilogue
(HAS_RES): the taps read the input directly, there is nothing to recompute. mbconv's SE path uses the same halo
helpers.
"""

from __future__ import annotations

from typing import List, Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from cnnkernels.ops._checks import check_inverted_residual, empty_output, same_padding
from cnnkernels.triton._common import (ACTIVATION_CODES, acc_zeros, activate, autotune_configs, check_device,
                                       dot_mode, mma, register_like_main_op, round_to, schema, up)
from cnnkernels.triton.dwsep_conv2d import dw_pw_into

OP = "inverted_residual"

# Programs per SM of the persistent grids (`persistent_programs`), and in the interpreter.
_PROGRAMS_PER_SM = 4
_INTERPRETER_PROGRAMS = 3

# BLOCK_M = TILE_H * TILE_W output pixels; BLOCK_E halo pixels per expansion GEMM.
_CONFIGS = [
    triton.Config({"TILE_H": 4, "TILE_W": 8, "BLOCK_N": 32, "BLOCK_H": 32, "BLOCK_C": 16, "BLOCK_E": 32},
                  num_warps=4, num_stages=2),
    triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_N": 64, "BLOCK_H": 32, "BLOCK_C": 32, "BLOCK_E": 64},
                  num_warps=4, num_stages=2),
    triton.Config({"TILE_H": 8, "TILE_W": 8, "BLOCK_N": 128, "BLOCK_H": 32, "BLOCK_C": 32, "BLOCK_E": 64},
                  num_warps=8, num_stages=2),
    triton.Config({"TILE_H": 8, "TILE_W": 16, "BLOCK_N": 64, "BLOCK_H": 32, "BLOCK_C": 32, "BLOCK_E": 64},
                  num_warps=8, num_stages=2),
    triton.Config({"TILE_H": 4, "TILE_W": 16, "BLOCK_N": 64, "BLOCK_H": 32, "BLOCK_C": 32, "BLOCK_E": 64},
                  num_warps=4, num_stages=2),
]


def halo_side(tile: int, out: int, stride: int, k: int) -> int:
    """Input rows (or columns) a tile of `tile` output rows reads through a k-tap depthwise conv, in an output of
    `out` rows: a smaller output shrinks the tile (else a huge stride would span rows no tap reads)."""
    return (min(tile, out) - 1) * stride + k


def tile_count(Ho: int, Wo: int, meta) -> int:
    """Spatial tiles of one image under a config's parameters (config.kwargs, or the launch's meta)."""
    return triton.cdiv(Ho, meta["TILE_H"]) * triton.cdiv(Wo, meta["TILE_W"])


def halo_scratch(configs: List[triton.Config], programs, Ho: int, Wo: int, stride: int, k: int,
                 like: torch.Tensor) -> torch.Tensor:
    """The flat scratch of `expand_halo`: two [halo pixels x BLOCK_H] buffers per program, in the input dtype, large
    enough for every config the autotuner may launch (programs(config.kwargs) gives the grid's size)."""
    elems = max(2 * programs(c.kwargs) * halo_side(c.kwargs["TILE_H"], Ho, stride, k)
                * halo_side(c.kwargs["TILE_W"], Wo, stride, k) * c.kwargs["BLOCK_H"] for c in configs)
    return torch.empty(elems, dtype=like.dtype, device=like.device)


@triton.jit
def halo_dims(stride, Ho, Wo, KH: tl.constexpr, KW: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    """The kernels' `halo_side`: (tile rows, tile columns, halo rows, halo columns) of a TILE_H x TILE_W tile."""
    th = tl.minimum(Ho, TILE_H)
    tw = tl.minimum(Wo, TILE_W)
    return th, tw, (th - 1) * stride + KH, (tw - 1) * stride + KW


@triton.jit
def spatial_tile(t, Ho, Wo, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
    """Tile t (row-major) of an image's Ho x Wo output: its origin, each row's position in it (lh, lw), each row's
    output pixel and the row mask."""
    tiles_w = tl.cdiv(Wo, TILE_W)
    h0 = (t // tiles_w) * TILE_H
    w0 = (t % tiles_w) * TILE_W
    r = tl.arange(0, TILE_H * TILE_W)
    lh = r // TILE_W
    lw = r % TILE_W
    ho = h0 + lh
    wo = w0 + lw
    return h0, w0, lh, lw, ho, wo, (ho < Ho) & (wo < Wo)


@triton.jit
def expand_halo(SCR, x_img, hi0, wi0, HALO_H, HALO_W, hh, h_mask, WE, BE, H, W, C, sxc, sxh, sxw, swe_o, swe_i,
                HAS_BE: tl.constexpr, ACT: tl.constexpr, DOT: tl.constexpr, F64: tl.constexpr,
                BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr):
    """Writes E = ACT(X @ WE[hh] + BE[hh]), rounded to SCR's element type as the unfused op stores it, at the
    HALO_H x HALO_W input pixels from (hi0, wi0) to SCR[q * BLOCK_H + j] (q: the halo pixel, row-major; j: the
    channel in the block). Pixels outside the image get zeros: the depthwise conv pads the expanded map with zeros,
    not with act(BE). Channels past the mask get act(0) = 0."""
    n_halo = HALO_H * HALO_W
    offs_e = tl.arange(0, BLOCK_E)
    offs_c = tl.arange(0, BLOCK_C)
    offs_j = tl.arange(0, BLOCK_H)
    for e0 in range(0, n_halo, BLOCK_E):
        q = e0 + offs_e
        q_mask = q < n_halo
        hi = hi0 + q // HALO_W
        wi = wi0 + q % HALO_W
        pix_ok = q_mask & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
        x_pix = (x_img + hi * sxh + wi * sxw)[:, None]
        e = acc_zeros(BLOCK_E, BLOCK_H, F64)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + offs_c
            c_mask = cc < C
            xa = tl.load(x_pix + (cc.to(tl.int64) * sxc)[None, :], mask=pix_ok[:, None] & c_mask[None, :], other=0.0)
            we = tl.load(WE + (hh * swe_o)[None, :] + (cc * swe_i)[:, None], mask=c_mask[:, None] & h_mask[None, :],
                         other=0.0)
            e = mma(xa, we, e, SCR, DOT)
        if HAS_BE:
            e += up(tl.load(BE + hh, mask=h_mask, other=0.0), F64)[None, :]
        e = tl.where(pix_ok[:, None], activate(e, ACT), 0.0)
        tl.store(SCR + (q * BLOCK_H)[:, None] + offs_j[None, :], e.to(SCR.dtype.element_ty), mask=q_mask[:, None])


@triton.jit
def dw_act_from_halo(SCR, x_img, h0, w0, lh, lw, hh0, hh, h_mask, WE, BE, WD, BD, Y, H, W, Ho, Wo, C,
                     sxc, sxh, sxw, swe_o, swe_i, swd_c, swd_h, swd_w, stride, pad,
                     KH: tl.constexpr, KW: tl.constexpr, HAS_BE: tl.constexpr, HAS_BD: tl.constexpr,
                     EXP_ACT: tl.constexpr, DW_ACT: tl.constexpr, DOT: tl.constexpr, F64: tl.constexpr,
                     TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_H: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    """The [TILE_H*TILE_W x BLOCK_H] tile D = DW_ACT(depthwise_KHxKW(E)[hh] + BD[hh]) of the output tile at
    (h0, w0) and the hidden block hh = hh0 + arange(BLOCK_H), rounded to Y's element type, where
    E = EXP_ACT(X @ WE + BE) is expanded once for the tile's halo into the program's scratch slice SCR
    (`expand_halo`; `program_scratch`). Rows past the image hold values of the zero padding or of the
    image (never read past the halo); channels past the mask hold act(0) = 0."""
    th, tw, HALO_H, HALO_W = halo_dims(stride, Ho, Wo, KH, KW, TILE_H, TILE_W)
    # rows of a tile wider than the map (masked) read its last row or column, inside the halo (lh * stride could
    # even overflow)
    lh = tl.minimum(lh, th - 1)
    lw = tl.minimum(lw, tw - 1)
    # Two buffers, alternating over the hidden blocks: the barrier after a block's writes also orders the previous
    # block's reads (of the other buffer) before the next writes into theirs, so one barrier per block suffices.
    buf = SCR + ((hh0 // BLOCK_H) % 2) * (HALO_H * HALO_W * BLOCK_H)
    expand_halo(buf, x_img, h0 * stride - pad, w0 * stride - pad, HALO_H, HALO_W, hh, h_mask, WE, BE, H, W, C,
                sxc, sxh, sxw, swe_o, swe_i, HAS_BE, EXP_ACT, DOT, F64, BLOCK_E, BLOCK_H, BLOCK_C)
    # every thread's writes to buf visible to every thread's reads (bar.sync orders global memory within the block)
    tl.debug_barrier()
    # One offset tensor for all taps, each tap a scalar shift of it: per-tap pointer tensors would be hoisted out of
    # the hidden loop and held in registers (9 x 2 registers per element for 3x3).
    offs = ((lh * stride * HALO_W + lw * stride) * BLOCK_H)[:, None] + tl.arange(0, BLOCK_H)[None, :]
    d = acc_zeros(TILE_H * TILE_W, BLOCK_H, F64)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            # lh < th and lw < tw: the tap lies inside the halo for every row, masked or not
            e = up(tl.load(buf + (kh * HALO_W + kw) * BLOCK_H + offs), F64)
            wd = up(tl.load(WD + hh * swd_c + kh * swd_h + kw * swd_w, mask=h_mask, other=0.0), F64)
            d += e * wd[None, :]
    if HAS_BD:
        d += up(tl.load(BD + hh, mask=h_mask, other=0.0), F64)[None, :]
    return round_to(activate(d, DW_ACT), Y, F64)


@triton.jit
def program_scratch(SCR, slice_id, stride, Ho, Wo, KH: tl.constexpr, KW: tl.constexpr, TILE_H: tl.constexpr,
                    TILE_W: tl.constexpr, BLOCK_H: tl.constexpr):
    """The scratch slice of program slice_id (the layout `halo_scratch` sizes): two halo buffers."""
    _, _, HALO_H, HALO_W = halo_dims(stride, Ho, Wo, KH, KW, TILE_H, TILE_W)
    return SCR + slice_id.to(tl.int64) * (2 * HALO_H * HALO_W * BLOCK_H)


@triton.autotune(configs=autotune_configs(_CONFIGS), key=["Ho", "Wo", "C", "HID", "COUT", "KH", "STRIDE"])
@triton.jit
def _expand_dw_pw_kernel(
        X, WE, BE, WD, BD, WP, BP, Y, SCR,
        N, H, W, Ho, Wo, C, HID, COUT,
        sxn, sxc, sxh, sxw,
        swe_o, swe_i,
        swd_c, swd_h, swd_w,
        swp_o, swp_i,
        syn, syc, syh, syw,
        STRIDE, pad,
        KH: tl.constexpr, KW: tl.constexpr, HAS_BE: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr,
        DOT: tl.constexpr, F64: tl.constexpr,
        TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_E: tl.constexpr):
    """Y[n, co, ho, wo] = sum_h WP[co, h] * D[h] + BP[co] (+ X[n, co, ho, wo] with HAS_RES), D as in
    `dw_act_from_halo`. A persistent grid: program p takes the work items p, p + programs, ... of the
    (image, tile, output channel block) list, all with its one scratch slice."""
    tiles = tl.cdiv(Ho, TILE_H) * tl.cdiv(Wo, TILE_W)
    cblocks = tl.cdiv(COUT, BLOCK_N)
    s_prog = program_scratch(SCR, tl.program_id(0), STRIDE, Ho, Wo, KH, KW, TILE_H, TILE_W, BLOCK_H)
    offs_h = tl.arange(0, BLOCK_H)
    for work in range(tl.program_id(0), N * tiles * cblocks, tl.num_programs(0)):
        # the output channel blocks of a tile are consecutive items, run at the same time by neighbouring programs:
        # its input halo is read from L2 by all but the first
        image_tile = work // cblocks
        n = (image_tile // tiles).to(tl.int64)
        h0, w0, lh, lw, _, _, _ = spatial_tile(image_tile % tiles, Ho, Wo, TILE_H, TILE_W)
        x_img = X + n * sxn
        # the previous item's last taps may still be reading the buffer this item's first block writes
        tl.debug_barrier()
        acc = acc_zeros(TILE_H * TILE_W, BLOCK_N, F64)
        for hid0 in range(0, HID, BLOCK_H):
            hh = hid0 + offs_h
            h_mask = hh < HID
            d = dw_act_from_halo(s_prog, x_img, h0, w0, lh, lw, hid0, hh, h_mask, WE, BE, WD, BD, Y, H, W, Ho, Wo,
                                 C, sxc, sxh, sxw, swe_o, swe_i, swd_c, swd_h, swd_w, STRIDE, pad,
                                 KH, KW, HAS_BE, True, ACT, ACT, DOT, F64, TILE_H, TILE_W, BLOCK_E, BLOCK_H, BLOCK_C)
            # channels past HID hold act(0) = 0 and meet zero projection weights
            co = (work % cblocks) * BLOCK_N + tl.arange(0, BLOCK_N)
            n_mask = co < COUT
            wp = tl.load(WP + (co * swp_o)[None, :] + (hh * swp_i)[:, None],
                         mask=h_mask[:, None] & n_mask[None, :], other=0.0)
            acc = mma(d, wp, acc, Y, DOT)
        # recomputed rather than held in registers through the hidden loop
        _, _, _, _, ho, wo, m_mask = spatial_tile(image_tile % tiles, Ho, Wo, TILE_H, TILE_W)
        co = (work % cblocks) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = co < COUT
        mask = m_mask[:, None] & n_mask[None, :]
        acc += up(tl.load(BP + co, mask=n_mask, other=0.0), F64)[None, :]
        if HAS_RES:
            acc += up(tl.load((x_img + ho * sxh + wo * sxw)[:, None] + (co.to(tl.int64) * sxc)[None, :], mask=mask,
                              other=0.0), F64)
        y_off = (n * syn + ho * syh + wo * syw)[:, None] + (co.to(tl.int64) * syc)[None, :]
        tl.store(Y + y_off, acc.to(Y.dtype.element_ty), mask=mask)


def persistent_programs(work: int, device: torch.device) -> int:
    """Programs of a persistent grid over `work` items. Each holds a halo scratch slice, so their number bounds the
    scratch (it would otherwise grow with the batch, to about the expanded tensor's size for 96 hidden channels, and
    spill from L2 to DRAM): a few per SM on a GPU. In the interpreter a handful, so that the tests run programs over
    several items."""
    if device.type == "cuda":
        return min(work, _PROGRAMS_PER_SM * torch.cuda.get_device_properties(device).multi_processor_count)
    return min(work, _INTERPRETER_PROGRAMS)


def expand_dw_pw_into(out: torch.Tensor, input: torch.Tensor, expand_weight: torch.Tensor,
                      expand_bias: Optional[torch.Tensor], dw_weight: torch.Tensor, dw_bias: torch.Tensor,
                      project_weight: torch.Tensor, project_bias: torch.Tensor, stride: int, activation: str,
                      residual: bool) -> None:
    """Launches `_expand_dw_pw_kernel` writing `out` (validated shapes, an expansion, 'same' padding)."""
    N, C, H, W = input.shape
    hid, k, cout = dw_weight.shape[0], dw_weight.shape[2], project_weight.shape[0]
    Ho, Wo = out.shape[2], out.shape[3]
    if N * Ho * Wo == 0:
        return

    def programs(meta):
        return persistent_programs(N * tile_count(Ho, Wo, meta) * triton.cdiv(cout, meta["BLOCK_N"]), input.device)

    def grid(meta):
        return (programs(meta),)

    scratch = halo_scratch(_expand_dw_pw_kernel.configs, programs, Ho, Wo, stride, k, input)
    wrap_triton(_expand_dw_pw_kernel)[grid](
        input, expand_weight, expand_bias if expand_bias is not None else expand_weight, dw_weight, dw_bias,
        project_weight, project_bias, out, scratch,
        N, H, W, Ho, Wo, C, hid, cout,
        *input.stride(), expand_weight.stride(0), expand_weight.stride(1),
        dw_weight.stride(0), dw_weight.stride(2), dw_weight.stride(3),
        project_weight.stride(0), project_weight.stride(1), *out.stride(),
        stride, k // 2,
        KH=k, KW=k, HAS_BE=expand_bias is not None, HAS_RES=residual, ACT=ACTIVATION_CODES[activation],
        DOT=dot_mode(input.dtype), F64=input.dtype == torch.float64)


def inverted_residual_into(out, input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias,
                           stride: int, residual: bool, activation: str) -> None:
    """The whole block into `out`: the halo kernel with an expansion, dwsep_conv2d's kernel without."""
    if expand_weight is not None:
        expand_dw_pw_into(out, input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias,
                          stride, activation, residual)
    else:
        dw_pw_into(out, input, dw_weight, dw_bias, project_weight, project_bias, [stride, stride],
                   same_padding(dw_weight), [1, 1], activation, "none", residual)


@triton_op("cnnkernels::inverted_residual_triton", mutates_args=(), schema=schema(OP))
def inverted_residual_triton(input: torch.Tensor, expand_weight: Optional[torch.Tensor],
                             expand_bias: Optional[torch.Tensor], dw_weight: torch.Tensor, dw_bias: torch.Tensor,
                             project_weight: torch.Tensor, project_bias: torch.Tensor, stride: int, residual: bool,
                             activation: str) -> torch.Tensor:
    shape = check_inverted_residual(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias,
                                    stride, residual, activation)
    check_device(OP, input)
    out = empty_output(input, shape)
    inverted_residual_into(out, input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias,
                           stride, residual, activation)
    return out


register_like_main_op(OP)
