// Test build (tests/cuda_kernels/test_cuda_emulated.py): the CUDA op wrappers compiled for the host with
// CNNKERNELS_EMULATE, registered as cnnkernels_emu::<op> for CPU tensors (the test defines the schemas from
// cnnkernels/ops.schema). Together with emu_kernels.cpp this runs the exact wrapper + launcher + kernel code of the
// CUDA ops on the CPU.
#define CNNKERNELS_EMULATE 1

#include "common/checks.cpp"
#include "common/op_checks.cpp"

#include "cuda/add_relu.cpp"
#include "cuda/boxes.cpp"
#include "cuda/conv2d_act.cpp"
#include "cuda/dwsep_conv2d.cpp"
#include "cuda/inception_block.cpp"
#include "cuda/inverted_residual.cpp"
#include "cuda/mbconv.cpp"
#include "cuda/up_concat_conv.cpp"
