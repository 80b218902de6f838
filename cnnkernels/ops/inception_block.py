"""inception_block: the four-branch GoogLeNet (Inception v1) module, branch outputs concatenated along channels:
relu(1x1) | relu(kxk(relu(1x1 reduce))) | relu(kxk(relu(1x1 reduce))) | relu(1x1(maxpool 3x3 s1 p1)). The branches
are written straight into their channel slice of the output (no separate cat)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnkernels._library import register_reference_where_missing
from cnnkernels.backends import call
from cnnkernels.ops._act import activation_grad, conv_backward
from cnnkernels.ops._checks import (_shape, as_output, check_bias, check_input, check_like, check_pointwise,
                                    empty_output)
from cnnkernels.ops._precision import run_in_fp32

OP = "inception_block"
_POOL = ([3, 3], [1, 1], [1, 1], [1, 1], False)  # kernel, stride, padding, dilation, ceil_mode


def _check_spatial(input, weight, arg, cin):
    check_like(OP, input, weight, arg)
    if weight.dim() != 4 or weight.shape[0] <= 0 or weight.shape[1] != cin or weight.shape[2] % 2 != 1 \
            or weight.shape[3] % 2 != 1:
        raise ValueError(f"cnnkernels.{OP}: {arg} must have shape [C_out, {cin}, kH, kW] with odd kH and kW, got "
                         f"shape {_shape(weight)}")
    return weight.shape[0]


def _check(input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce, w3, b3, w4, b4):
    check_input(OP, input)
    N, C, H, W = input.shape
    c1 = check_pointwise(OP, input, w1, "w1", C)
    check_bias(OP, input, b1, c1, "b1", required=True)
    c2r = check_pointwise(OP, input, w2_reduce, "w2_reduce", C)
    check_bias(OP, input, b2_reduce, c2r, "b2_reduce", required=True)
    c2 = _check_spatial(input, w2, "w2", c2r)
    check_bias(OP, input, b2, c2, "b2", required=True)
    c3r = check_pointwise(OP, input, w3_reduce, "w3_reduce", C)
    check_bias(OP, input, b3_reduce, c3r, "b3_reduce", required=True)
    c3 = _check_spatial(input, w3, "w3", c3r)
    check_bias(OP, input, b3, c3, "b3", required=True)
    c4 = check_pointwise(OP, input, w4, "w4", C)
    check_bias(OP, input, b4, c4, "b4", required=True)
    return N, c1 + c2 + c3 + c4, H, W


def _same(weight):
    return [weight.shape[2] // 2, weight.shape[3] // 2]


def _conv_relu(x, weight, bias):
    return torch.relu(F.conv2d(x, weight, bias, 1, _same(weight)))


def _maxpool(x):
    return F.max_pool2d(x, 3, 1, 1)


def inception_block_reference(input: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2_reduce: torch.Tensor,
                              b2_reduce: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, w3_reduce: torch.Tensor,
                              b3_reduce: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, w4: torch.Tensor,
                              b4: torch.Tensor) -> torch.Tensor:
    return torch.cat([
        _conv_relu(input, w1, b1),
        _conv_relu(_conv_relu(input, w2_reduce, b2_reduce), w2, b2),
        _conv_relu(_conv_relu(input, w3_reduce, b3_reduce), w3, b3),
        _conv_relu(_maxpool(input), w4, b4),
    ], dim=1)


def _fallback(*args):
    _check(*args)
    return as_output(args[0], run_in_fp32(inception_block_reference, *args))


register_reference_where_missing(OP, _fallback)


@torch.library.register_fake("cnnkernels::inception_block")
def _fake(input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce, w3, b3, w4, b4):
    shape = _check(input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce, w3, b3, w4, b4)
    return empty_output(input, shape)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs, output)


def _backward(ctx, grad):
    input, w1, b1, w2r, b2r, w2, b2, w3r, b3r, w3, b3, w4, b4, out = ctx.saved_tensors
    need = ctx.needs_input_grad
    widths = [w1.shape[0], w2.shape[0], w3.shape[0], w4.shape[0]]
    # Each branch's output is relu(z): its gradient w.r.t. z comes from the branch's slice of the output.
    g1, g2, g3, g4 = (activation_grad(g, o, "relu") for g, o in zip(grad.split(widths, 1), out.split(widths, 1)))
    gx_parts = []

    gx, gw1, gb1 = conv_backward(g1, input, w1, True, [1, 1], [0, 0], [1, 1], 1, (need[0], need[1], need[2]))
    gx_parts.append(gx)

    def reduce_branch(g, wr, br, w, i):
        # Branch relu(w * relu(wr * x + br) + b); i is the index of wr in the op's inputs.
        need_r = need[0] or need[i] or need[i + 1]
        r = _conv_relu(input, wr, br)
        gr, gw, gb = conv_backward(g, r, w, True, [1, 1], _same(w), [1, 1], 1, (need_r, need[i + 2], need[i + 3]))
        gwr = gbr = None
        if need_r:
            gr = activation_grad(gr, r, "relu")
            gx, gwr, gbr = conv_backward(gr, input, wr, True, [1, 1], [0, 0], [1, 1], 1,
                                         (need[0], need[i], need[i + 1]))
            gx_parts.append(gx)
        return gwr, gbr, gw, gb

    gw2r, gb2r, gw2, gb2 = reduce_branch(g2, w2r, b2r, w2, 3)
    gw3r, gb3r, gw3, gb3 = reduce_branch(g3, w3r, b3r, w3, 7)

    pooled, indices = torch.ops.aten.max_pool2d_with_indices(input, *_POOL)
    gp, gw4, gb4 = conv_backward(g4, pooled, w4, True, [1, 1], [0, 0], [1, 1], 1, (need[0], need[11], need[12]))
    if need[0]:
        gx_parts.append(torch.ops.aten.max_pool2d_with_indices_backward(gp, input, *_POOL, indices))
    gx = None
    if need[0]:
        gx = gx_parts[0]
        for p in gx_parts[1:]:
            gx = gx + p
    return gx, gw1, gb1, gw2r, gb2r, gw2, gb2, gw3r, gb3r, gw3, gb3, gw4, gb4


torch.library.register_autograd("cnnkernels::inception_block", _backward, setup_context=_setup_context)


def inception_block(input: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2_reduce: torch.Tensor,
                    b2_reduce: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, w3_reduce: torch.Tensor,
                    b3_reduce: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, w4: torch.Tensor,
                    b4: torch.Tensor) -> torch.Tensor:
    """cat([relu(1x1), relu(kxk(relu(1x1))), relu(kxk(relu(1x1))), relu(1x1(maxpool3x3))], dim=1); the kxk convs
    (odd k, e.g. GoogLeNet's 3x3 and 5x5) are 'same'-padded, so the output keeps the input's H x W."""
    return call("inception_block", _fallback, input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce,
                w3, b3, w4, b4)
