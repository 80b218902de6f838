"""inception_block: the four-branch GoogLeNet (Inception v1) module, branch outputs concatenated along channels:
relu(1x1) | relu(kxk(relu(1x1 reduce))) | relu(kxk(relu(1x1 reduce))) | relu(1x1(maxpool 3x3 s1 p1)). The branches
are written straight into their channel slice of the output (no separate cat)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnkernels._library import register_reference_where_missing
from cnnkernels.backends import call
from cnnkernels.ops._act import activation_grad
from cnnkernels.ops._conv_backward import conv_backward
from cnnkernels.ops._checks import as_output, check_inception_block, empty_output, same_padding
from cnnkernels.ops._precision import run_in_fp32
from cnnkernels.ops._register import register_op_hooks

OP = "inception_block"
_POOL = ([3, 3], [1, 1], [1, 1], [1, 1], False)  # kernel, stride, padding, dilation, ceil_mode


def _conv_relu(x, weight, bias):
    return torch.relu(F.conv2d(x, weight, bias, 1, same_padding(weight)))


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
    check_inception_block(*args)
    return as_output(args[0], run_in_fp32(inception_block_reference, *args))


register_reference_where_missing(OP, _fallback)


def _fake(input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce, w3, b3, w4, b4):
    shape = check_inception_block(input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce, w3, b3, w4, b4)
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
        gr, gw, gb = conv_backward(g, r, w, True, [1, 1], same_padding(w), [1, 1], 1,
                                   (need_r, need[i + 2], need[i + 3]))
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


register_op_hooks("inception_block", fake=_fake, backward=_backward, setup_context=_setup_context)


def inception_block(input: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2_reduce: torch.Tensor,
                    b2_reduce: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, w3_reduce: torch.Tensor,
                    b3_reduce: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, w4: torch.Tensor,
                    b4: torch.Tensor) -> torch.Tensor:
    """cat([relu(1x1), relu(kxk(relu(1x1))), relu(kxk(relu(1x1))), relu(1x1(maxpool3x3))], dim=1); the kxk convs
    (odd k, e.g. GoogLeNet's 3x3 and 5x5) are 'same'-padded, so the output keeps the input's H x W."""
    return call("inception_block", _fallback, input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce,
                w3, b3, w4, b4)
