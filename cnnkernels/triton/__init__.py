"""Triton implementations of the cnnkernels ops, registered as torch ops `torch.ops.cnnkernels.<op>_triton`.

Each op is declared with `torch.library.triton_op` and launches its kernels through `wrap_triton`, so torch.compile
traces into them on a GPU; it has the main op's signature, validation, fake kernel and autograd. Importing this
package needs triton; `cnnkernels.backends` imports it lazily, only when a Triton op is about to run.

On a CPU-only machine the ops run on CPU tensors in the Triton interpreter: set TRITON_INTERPRET=1 before triton is
first imported (the interpreter is chosen when the kernels are defined; `INTERPRET` records it). Fake-tensor tracing
and torch.compile of the Triton ops only work on a GPU.
"""

from cnnkernels.triton._common import INTERPRET
from cnnkernels.triton.add_relu import add_relu_triton
from cnnkernels.triton.box_iou import box_iou_triton
from cnnkernels.triton.conv2d_act import conv2d_act_triton
from cnnkernels.triton.dwsep_conv2d import dwsep_conv2d_triton
from cnnkernels.triton.inception_block import inception_block_triton
from cnnkernels.triton.inverted_residual import inverted_residual_triton
from cnnkernels.triton.mbconv import mbconv_triton
from cnnkernels.triton.up_concat_conv import up_concat_conv_triton

__all__ = ["INTERPRET", "add_relu_triton", "box_iou_triton", "conv2d_act_triton", "dwsep_conv2d_triton",
           "inception_block_triton", "inverted_residual_triton", "mbconv_triton", "up_concat_conv_triton"]
