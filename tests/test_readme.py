"""The README's Python snippets are complete programs: each runs as written, in a fresh
interpreter, with warnings turned into errors, and prints what its comments say (#18.4)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_snippets():
    assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_snippet_runs_without_warnings(i, tmp_path):
    code = BLOCKS[i]
    if "import torch" in code and importlib.util.find_spec("torch") is None:
        pytest.skip("this snippet uses PyTorch")
    import os

    env = dict(os.environ, PYTHONPATH=str(README.parent))  # this checkout's xpdl
    r = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.split()
    if "clf.score" in code:  # accuracy, then the largest torch/NumPy difference
        assert float(lines[0]) > 0.95 and float(lines[1]) < 1e-4
        assert (tmp_path / "digits.safetensors").exists()
    if "compile_step" in code:  # "replay", then the last batch loss
        assert lines[0] == "replay" and float(lines[1]) < 0.5
