"""cnnkernels::inverted_residual_triton: the MobileNetV2 block (expand 1x1 -> act -> depthwise kxk -> act -> project
1x1 (+ input)) as one Triton kernel: dwsep_conv2d's `_dw_pw_kernel` with the expansion computed in registers at each
depthwise tap (HAS_EXPAND) and the block input added in the epilogue (HAS_RES). Neither the expanded nor the
depthwise intermediate goes to global memory."""

from __future__ import annotations

from typing import Optional

import torch
from torch.library import triton_op

from cnnkernels.ops._checks import check_inverted_residual, empty_output, same_padding
from cnnkernels.triton._common import check_device, register_like_main_op, schema
from cnnkernels.triton.dwsep_conv2d import dw_pw_into

OP = "inverted_residual"


@triton_op("cnnkernels::inverted_residual_triton", mutates_args=(), schema=schema(OP))
def inverted_residual_triton(input: torch.Tensor, expand_weight: Optional[torch.Tensor],
                             expand_bias: Optional[torch.Tensor], dw_weight: torch.Tensor, dw_bias: torch.Tensor,
                             project_weight: torch.Tensor, project_bias: torch.Tensor, stride: int, residual: bool,
                             activation: str) -> torch.Tensor:
    shape = check_inverted_residual(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias,
                                    stride, residual, activation)
    check_device(OP, input)
    out = empty_output(input, shape)
    dw_pw_into(out, input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias,
               [stride, stride], same_padding(dw_weight), [1, 1], activation, activation, "none", residual)
    return out


register_like_main_op(OP)
