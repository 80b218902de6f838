"""cnnkernels::inception_block_triton: the four-branch GoogLeNet module with conv2d_act's implicit-GEMM kernel, each
branch written straight into its channel slice of the output (no torch.cat):

1. relu(1x1(x))                       -> out[:, :c1]
2. the two 1x1 reduces                -> r[:, :c2r] and r[:, c2r:] (the only intermediate: the kxk convs need its
                                         neighbourhoods), one launch each
3. relu(kxk(r[:, :c2r]))              -> out[:, c1:c1+c2]
4. relu(kxk(r[:, c2r:]))              -> out[:, c1+c2:c1+c2+c3]
5. relu(1x1(maxpool3x3(x)))           -> out[:, c1+c2+c3:], the max-pool computed while gathering the GEMM's input

The two reduces are two launches into the two channel ranges of r rather than one GEMM over the concatenated weights:
concatenating on every call costs two cat kernels and two allocations, more than the second launch (one more read of
the input, which the first launch has just brought into L2), and caching the concatenation would need invalidation on
every weight update.
"""

from __future__ import annotations

import torch
from torch.library import triton_op

from cnnkernels.ops._checks import check_inception_block, empty_output, same_padding
from cnnkernels.triton._common import check_device, register_like_main_op, schema
from cnnkernels.triton.conv2d_act import conv_into

OP = "inception_block"


@triton_op("cnnkernels::inception_block_triton", mutates_args=(), schema=schema(OP))
def inception_block_triton(input: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2_reduce: torch.Tensor,
                           b2_reduce: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, w3_reduce: torch.Tensor,
                           b3_reduce: torch.Tensor, w3: torch.Tensor, b3: torch.Tensor, w4: torch.Tensor,
                           b4: torch.Tensor) -> torch.Tensor:
    shape = check_inception_block(input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce, w3, b3, w4, b4)
    check_device(OP, input)
    N, C, H, W = input.shape
    out = empty_output(input, shape)
    c1, c2r, c2, c3r, c3 = w1.shape[0], w2_reduce.shape[0], w2.shape[0], w3_reduce.shape[0], w3.shape[0]
    one, zero = [1, 1], [0, 0]
    conv_into(out, 0, input, 0, C, w1, b1, None, one, zero, one, 1, "relu")
    r = empty_output(input, (N, c2r + c3r, H, W))
    conv_into(r, 0, input, 0, C, w2_reduce, b2_reduce, None, one, zero, one, 1, "relu")
    conv_into(r, c2r, input, 0, C, w3_reduce, b3_reduce, None, one, zero, one, 1, "relu")
    conv_into(out, c1, r, 0, c2r, w2, b2, None, one, same_padding(w2), one, 1, "relu")
    conv_into(out, c1 + c2, r, c2r, c3r, w3, b3, None, one, same_padding(w3), one, 1, "relu")
    conv_into(out, c1 + c2 + c3, input, 0, C, w4, b4, None, one, zero, one, 1, "relu", pool=True)
    return out


register_like_main_op(OP)
