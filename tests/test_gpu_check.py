"""The prepared GPU check (benchmarks/gpu/run.sh) is valid shell, and its benchmark records go
where LATTICE_ML_BENCH_RESULTS says (so --simulate never writes into benchmarks/results/)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["run.sh", "fetch_wheels.sh"])
def test_the_scripts_parse(script):
    path = ROOT / "benchmarks" / "gpu" / script
    if not path.exists():
        pytest.skip("benchmarks/ not in this checkout")
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_benchmark_records_follow_the_environment(tmp_path):
    if not (ROOT / "benchmarks" / "harness.py").exists():
        pytest.skip("benchmarks/ not in this checkout")
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import harness; "
            "print(harness.record('probe', [{'x': 1}], 'numpy'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, LATTICE_ML_BENCH_RESULTS=str(tmp_path)), check=True)
    written = Path(out.stdout.strip())
    assert written.parent == tmp_path and written.exists()
