"""TinyNet: every op in one small network (tests/ops/test_compile_export.py compiles and exports it,
tests/reliability/test_threads.py runs it from several threads)."""

import torch
import torch.nn.functional as F
from torch import nn

import cnnkernels


def _param(*shape):
    """A weight ([C_out, C_in, kH, kW], He-scaled) or a bias ([C])."""
    fan_in = shape[1] * shape[2] * shape[3] if len(shape) == 4 else 4 * shape[0]
    return nn.Parameter(torch.randn(*shape) * (2.0 / fan_in) ** 0.5)


class TinyNet(nn.Module):
    """stem conv -> dwsep (stride 2) -> inverted residual -> mbconv (SE, SiLU) -> inception -> conv + add_relu
    join -> up_concat_conv with the stem's output."""

    def __init__(self):
        super().__init__()
        self.stem = nn.ParameterList([_param(8, 3, 3, 3), _param(8)])
        self.dwsep = nn.ParameterList([_param(8, 1, 3, 3), _param(8), _param(12, 8, 1, 1), _param(12)])
        self.ir = nn.ParameterList([_param(36, 12, 1, 1), _param(36), _param(36, 1, 3, 3), _param(36),
                                    _param(12, 36, 1, 1), _param(12)])
        self.mb = nn.ParameterList([_param(24, 12, 1, 1), _param(24), _param(24, 1, 5, 5), _param(24),
                                    _param(6, 24, 1, 1), _param(6), _param(24, 6, 1, 1), _param(24),
                                    _param(12, 24, 1, 1), _param(12)])
        self.inc = nn.ParameterList([_param(4, 12, 1, 1), _param(4), _param(6, 12, 1, 1), _param(6),
                                     _param(6, 6, 3, 3), _param(6), _param(2, 12, 1, 1), _param(2),
                                     _param(3, 2, 5, 5), _param(3), _param(3, 12, 1, 1), _param(3)])
        self.head_w = _param(16, 16, 1, 1)
        self.up = nn.ParameterList([_param(16, 8, 2, 2), _param(8), _param(12, 16, 3, 3), _param(12)])

    def forward(self, x):
        x = skip = cnnkernels.conv2d_act(x, *self.stem, None, 1, 1, 1, 1, "relu")
        x = cnnkernels.dwsep_conv2d(x, *self.dwsep, 2, 1, 1, "relu", "relu6")
        x = cnnkernels.inverted_residual(x, *self.ir, stride=1, residual=True, activation="relu6")
        x = cnnkernels.mbconv(x, *self.mb, stride=1, residual=True, activation="silu", se_activation="silu",
                              se_gate="sigmoid")
        x = cnnkernels.inception_block(x, *self.inc)
        x = cnnkernels.add_relu(x, cnnkernels.conv2d_act(x, self.head_w, None, None, 1, 0, 1, 1, "none"))
        return self.decode(x, skip)

    def decode(self, x, skip):
        """A U-Net decoder step back to the stem's resolution, the stem's output as the skip tensor (zero-padded to
        twice x's size where the stride-2 stage rounded an odd size up)."""
        skip = F.pad(skip, (0, 2 * x.shape[3] - skip.shape[3], 0, 2 * x.shape[2] - skip.shape[2]))
        return cnnkernels.up_concat_conv(x, skip, *self.up, "relu")
