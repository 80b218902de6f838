"""The README's two set-up commands and .ci/run stay in step: CI installs what the README says and runs its test
command."""

from __future__ import annotations

import re

import pytest

from support.buildutil import REPO

README = REPO / "README.md"
CI = REPO / ".ci" / "run"

pytestmark = pytest.mark.skipif(not (README.exists() and CI.exists()), reason="no README.md/.ci/run next to tests")


def _readme_commands():
    blocks = re.findall(r"```bash\n(pip install [^\n]*)\n```", README.read_text())
    assert len(blocks) == 2, f"expected the two one-line set-up commands in README.md, found {blocks}"
    return blocks


def test_readme_commands_share_the_setup():
    test_cmd, bench_cmd = _readme_commands()
    assert test_cmd.endswith("&& pytest tests") and '".[test]"' in test_cmd
    assert bench_cmd.endswith("&& python bench/run.py") and '".[bench]"' in bench_cmd
    assert test_cmd.split(" && ")[0] == bench_cmd.split(" && ")[0]
    for cmd in (test_cmd, bench_cmd):
        assert "--no-build-isolation" in cmd


def test_ci_runs_the_readme_setup_and_test_command():
    setup = _readme_commands()[0].split(" && ")[0]          # pip install torch==... cmake ninja
    ci = CI.read_text()
    assert f'"$PY" -m {setup}' in ci, f"{CI} does not install what the README says: {setup}"
    assert re.search(r"^\s*pytest tests\b", ci, re.M), f"{CI} does not run `pytest tests`"
    assert "CNNKERNELS_EXPECT_COMPILED=1" in ci
