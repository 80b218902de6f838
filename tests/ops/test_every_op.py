"""What every op in cnnkernels/ops.schema must pass, over its sample inputs (tests/support/samples.py): its output
against the reference (fp32/fp16/bf16, every layout the samples hold), gradcheck in fp64 and torch.library.opcheck.
An op added to the schema is tested here as soon as it has samples (tests/packaging/test_library.py insists on them);
the per-op files hold what is particular to one op."""

import pytest
import torch

from cnnkernels._library import op_names
from support.helpers import assert_matches_reference, cases, gradcheck, opcheck, opcheck_cases


def _per_op(make) -> list:
    """`make(op)`'s pytest params for every op, with the op name first in their values and ids."""
    return [pytest.param(name, *p.values, id=f"{name}-{p.id}", marks=p.marks) for name in op_names()
            for p in make(name)]


@pytest.mark.correctness
@pytest.mark.parametrize("op_name,dtype,args", _per_op(cases))
def test_matches_reference(op_name, dtype, args):
    assert_matches_reference(op_name, args, dtype)


@pytest.mark.parametrize("op_name,dtype,args", _per_op(lambda name: cases(name, [torch.float64], tag="grad")))
def test_gradcheck(op_name, dtype, args):
    gradcheck(op_name, args)


@pytest.mark.parametrize("op_name,args,requires_grad", _per_op(opcheck_cases))
def test_opcheck(op_name, args, requires_grad):
    opcheck(op_name, args, requires_grad)
