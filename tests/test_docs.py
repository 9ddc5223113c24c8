"""The code shown in README.md runs as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/getting-started.md", "docs/smearing.md",
                                 "docs/training.md", "docs/fermions.md",
                                 "docs/flows.md", "docs/io.md", "docs/kernels.md"])
def test_python_examples_run(doc):
    path = ROOT / doc
    if not path.exists():
        pytest.skip(f"{doc} not in this checkout (installed package only)")
    blocks = python_blocks(path)
    assert blocks, f"{doc} has no python example"
    namespace = {}
    for code in blocks:
        exec(compile(code, str(path), "exec"), namespace)
