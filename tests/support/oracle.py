"""An independent float64 oracle for every op, shared by nothing in cnnkernels.

With the compiled library disabled the ops *are* their references (F.conv2d / F.max_pool2d compositions), so an
op-vs-reference test compares a function with itself. The oracle gives those tests a second, independent side: the
convolution is an explicit im2col (zero padding written by hand, windows taken with Tensor.unfold, which only makes
strided views) followed by an einsum, and the max pool is a -inf padding plus unfold + amax. No torch convolution,
pooling or F.unfold (which shares the convolution's im2col lowering) is involved.

Every function takes the op's full positional arguments, in any float dtype, and computes in float64.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

OPS_WITH_ORACLE = ("add_relu", "conv2d_act", "dwsep_conv2d", "inverted_residual", "inception_block", "mbconv",
                   "up_concat_conv")


def _f64(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.to(torch.float64)


def _pad(x: torch.Tensor, ph: int, pw: int, value: float) -> torch.Tensor:
    N, C, H, W = x.shape
    out = x.new_full((N, C, H + 2 * ph, W + 2 * pw), value)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def _windows(x: torch.Tensor, kh: int, kw: int, stride: Sequence[int], dilation: Sequence[int]) -> torch.Tensor:
    """[N, C, Ho, Wo, kh, kw]: the (dilated, strided) kxk window of x under every output pixel."""
    sh, sw = stride
    dh, dw = dilation
    # A dilated window is a dense window of the dilated extent with every d-th element kept.
    win = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    return win[..., ::dh, ::dw]


def activation(x: torch.Tensor, name: str) -> torch.Tensor:
    # clamp, unlike a comparison-based mask, keeps NaN as NaN (as torch.relu / relu6 do).
    if name == "relu":
        return x.clamp_min(0)
    if name == "relu6":
        return x.clamp(0, 6)
    if name == "silu":  # x * sigmoid(x) written out: 1 / (1 + e^-x)
        return x / (1 + torch.exp(-x))
    if name == "hardswish":
        return x * (x + 3).clamp(0, 6) / 6
    assert name == "none", name
    return x


def gate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "sigmoid":
        return 1 / (1 + torch.exp(-x))
    assert name == "hardsigmoid", name
    return (x + 3).clamp(0, 6) / 6


def conv2d_im2col(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1),
                  groups: int = 1) -> torch.Tensor:
    x, weight, bias = _f64(x), _f64(weight), _f64(bias)
    N, C, H, W = x.shape
    Cout, cin_g, kh, kw = weight.shape
    cols = _windows(_pad(x, padding[0], padding[1], 0.0), kh, kw, stride, dilation)
    Ho, Wo = cols.shape[2], cols.shape[3]
    cols = cols.reshape(N, groups, cin_g, Ho, Wo, kh, kw)
    w = weight.reshape(groups, Cout // groups, cin_g, kh, kw)
    y = torch.einsum("ngchwij,gocij->ngohw", cols, w).reshape(N, Cout, Ho, Wo)
    return y if bias is None else y + bias.view(1, Cout, 1, 1)


def maxpool3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 max pool, stride 1, padding 1: -inf padding never wins over a real value, as in max_pool2d."""
    return _windows(_pad(_f64(x), 1, 1, -float("inf")), 3, 3, (1, 1), (1, 1)).amax(dim=(-2, -1))


def _same(weight: torch.Tensor):
    return [weight.shape[2] // 2, weight.shape[3] // 2]


# ----------------------------------------------------------------------------------------------------- one per op

def add_relu(input, residual):
    return activation(_f64(input) + _f64(residual), "relu")


def conv2d_act(input, weight, bias, residual, stride, padding, dilation, groups, act):
    y = conv2d_im2col(input, weight, bias, stride, padding, dilation, groups)
    if residual is not None:
        y = y + _f64(residual)
    return activation(y, act)


def dwsep_conv2d(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, dw_act, pw_act):
    h = activation(conv2d_im2col(input, dw_weight, dw_bias, stride, padding, dilation, input.shape[1]), dw_act)
    return activation(conv2d_im2col(h, pw_weight, pw_bias), pw_act)


def inverted_residual(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride,
                      residual, act):
    h = _f64(input)
    if expand_weight is not None:
        h = activation(conv2d_im2col(h, expand_weight, expand_bias), act)
    h = activation(conv2d_im2col(h, dw_weight, dw_bias, [stride, stride], _same(dw_weight), [1, 1], h.shape[1]), act)
    y = conv2d_im2col(h, project_weight, project_bias)  # the projection is linear: no activation
    return y + _f64(input) if residual else y


def mbconv(input, expand_weight, expand_bias, dw_weight, dw_bias, se_reduce_weight, se_reduce_bias, se_expand_weight,
           se_expand_bias, project_weight, project_bias, stride, residual, act, se_act, se_gate):
    h = _f64(input)
    if expand_weight is not None:
        h = activation(conv2d_im2col(h, expand_weight, expand_bias), act)
    h = activation(conv2d_im2col(h, dw_weight, dw_bias, [stride, stride], _same(dw_weight), [1, 1], h.shape[1]), act)
    if se_reduce_weight is not None:
        # Squeeze: the mean as an explicit sum over the pixels; the two 1x1 convs on the 1x1 map are matrix products.
        m = h.sum((2, 3)) / (h.shape[2] * h.shape[3])
        r = activation(m @ _f64(se_reduce_weight).flatten(1).T + _f64(se_reduce_bias), se_act)
        s = gate(r @ _f64(se_expand_weight).flatten(1).T + _f64(se_expand_bias), se_gate)
        h = h * s[:, :, None, None]
    y = conv2d_im2col(h, project_weight, project_bias)
    return y + _f64(input) if residual else y


def inception_block(input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce, w3, b3, w4, b4):
    def conv_relu(x, w, b):
        return activation(conv2d_im2col(x, w, b, [1, 1], _same(w)), "relu")

    return torch.cat([
        conv_relu(input, w1, b1),
        conv_relu(conv_relu(input, w2_reduce, b2_reduce), w2, b2),
        conv_relu(conv_relu(input, w3_reduce, b3_reduce), w3, b3),
        conv_relu(maxpool3x3(input), w4, b4),
    ], dim=1)


def up_concat_conv(input, skip, up_weight, up_bias, weight, bias, act):
    # The 2x2 stride-2 transposed conv written out: upsampled pixel (2y+p, 2x+q) is input pixel (y, x) times tap (p, q).
    x = _f64(input)
    N, _, H, W = x.shape
    up = torch.einsum("ncyx,copq->noypxq", x, _f64(up_weight)).reshape(N, up_weight.shape[1], 2 * H, 2 * W)
    if up_bias is not None:
        up = up + _f64(up_bias).view(1, -1, 1, 1)
    return activation(conv2d_im2col(torch.cat([_f64(skip), up], dim=1), weight, bias, [1, 1], [1, 1]), act)


def oracle(op_name: str):
    assert op_name in OPS_WITH_ORACLE, op_name
    return globals()[op_name]
