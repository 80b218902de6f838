"""Runs the Triton interpreter test modules (tests/triton_ops/test_triton_<op>.py) in a subprocess with TRITON_INTERPRET=1.

Why a subprocess: the interpreter is chosen when `@triton.jit` decorates the kernels, i.e. when cnnkernels.triton is
first imported, from TRITON_INTERPRET at that moment. Setting the variable inside this pytest process would depend on
the order modules are imported in (another test module may import cnnkernels.triton or triton first), would leak into
every later test module, and on a GPU machine would turn the kernels that tests/triton_ops/test_triton_gpu.py compiles and
runs on CUDA into interpreted ones. So the per-op modules skip themselves unless the process was started with
TRITON_INTERPRET=1, and this module starts one such process for all of them (one interpreter start-up instead of five)
and reports each op's results as a separate test here, from the child's JUnit XML report.

To run the cases directly (per-case output):
`TRITON_INTERPRET=1 python -m pytest tests/triton_ops/test_triton_conv2d_act.py`; this module then skips itself, its cases
already running in-process.
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import cnnkernels
from cnnkernels._library import op_names
from cnnkernels.backends import NO_TRITON_OPS, triton_available
from support.buildutil import TESTS_DIR, skip_or_fail

TRITON_TESTS = Path(__file__).resolve().parent  # tests/triton_ops/, where the test_triton_<op>.py modules are
OPS = [op for op in op_names() if op not in NO_TRITON_OPS]  # the ops with a test_triton_<op>.py
TIMEOUT_S = 1200  # the whole run takes ~3 min on a busy 2-core machine

pytestmark = [
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") == "1",
                       reason="TRITON_INTERPRET=1 is set: the interpreter cases run in this process"),
]


@pytest.fixture(scope="module")
def child_run(tmp_path_factory):
    if not triton_available():
        skip_or_fail("triton cannot be imported (or torch lacks torch.library.triton_op)")
    report = tmp_path_factory.mktemp("triton_interpret") / "report.xml"
    files = [str(TRITON_TESTS / f"test_triton_{op}.py") for op in OPS]
    # The child must test the same cnnkernels as this process (the source tree or the installed package).
    package_parent = str(Path(cnnkernels.__file__).resolve().parent.parent)
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
           f"--rootdir={TESTS_DIR.parent}", *files]
    try:
        proc = subprocess.run(cmd, cwd=TESTS_DIR.parent, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the Triton interpreter run took more than {TIMEOUT_S} s: {' '.join(cmd)}\n"
                    f"{(e.stdout or '')[-4000:]}")
    output = proc.stdout + proc.stderr
    if not report.exists():
        pytest.fail(f"the Triton interpreter run wrote no report (exit {proc.returncode}):\n{output[-6000:]}")
    return ET.parse(report).getroot(), output, proc.returncode


@pytest.mark.parametrize("op", OPS)
def test_triton_op_in_interpreter(child_run, op):
    root, output, returncode = child_run
    module = f"test_triton_{op}"
    results = {"passed": [], "failed": [], "skipped": []}
    for case in root.iter("testcase"):
        where = f"{case.get('classname', '')}.{case.get('name', '')}"
        if module not in where:
            continue
        if case.find("failure") is not None or case.find("error") is not None:
            node = case.find("failure") if case.find("failure") is not None else case.find("error")
            results["failed"].append(f"{case.get('name')}: {(node.get('message') or '')[:300]}")
        elif case.find("skipped") is not None:
            results["skipped"].append(f"{case.get('name')}: {case.find('skipped').get('message')}")
        else:
            results["passed"].append(case.get("name"))
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    print(f"{module}: {len(results['passed'])} passed in the interpreter (child run: {summary})")
    assert not results["failed"], "\n".join([f"{module} failed in the Triton interpreter:"] + results["failed"]
                                                    + ["--- child output (tail) ---", output[-4000:]])
    assert not results["skipped"], "\n".join([f"{module}: cases skipped in the interpreter run:"]
                                                     + results["skipped"])
    assert results["passed"], f"{module}: no case ran in the interpreter (exit {returncode}):\n{output[-4000:]}"
