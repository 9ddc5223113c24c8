"""The code shown in README.md and docs/ runs as written, and the numbers the docs state next to
it hold (exact values, shapes, stated results), checked on the names the examples leave behind."""

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def _getting_started(ns, text):
    # "a free field: exactly solvable": the run agrees with the exact <phi^2> it prints
    res, exact = ns["res"], ns["exact"]
    assert abs(res.value - exact) < 4 * res.error, (res.value, res.error, exact)


def _fermions(ns, text):
    from lattice_ml.backend import to_numpy
    from lattice_ml.fermions import kappa_from_mass
    assert "kappa = 1/4.2" in text and kappa_from_mass(0.1, 2) == pytest.approx(1 / 4.2)
    assert tuple(ns["U"].shape) == (2, 2, 8, 4, 1, 1)            # the last block's links
    assert tuple(ns["C"].shape) == (2, 8)                          # "C = pion_correlator(W) # [2, 8]"
    assert to_numpy(ns["effective_mass"](ns["C"])).shape == (2, 7)  # "[2, 7], t = 1 .. 7"


def _gauge(ns, text):
    from lattice_ml.backend import to_numpy
    res = ns["res"]
    np.testing.assert_allclose(to_numpy(res.t), np.linspace(0.0, 1.0, 11), atol=1e-12)
    for name in ("t2E_clover", "W_plaquette", "W_clover"):
        assert to_numpy(getattr(res, name)).shape == (2, 11), name
    assert to_numpy(res.observables["topological_charge"]).shape == (2, 11)


def _flows(ns, text):
    summary = ns["sampler"].summary(ns["hist"])
    assert set(summary) == {"acceptance", "ess"}                   # "{'acceptance': ..., 'ess': ...}"
    assert 0 < summary["acceptance"] <= 1 and 0 < summary["ess"] <= 1


def _statistics(ns, text):
    from gauge_exact import u1_plaquette
    # the stated exact plaquette is the character expansion's, and the run agrees with it
    stated = float(re.search(r"torus, tests/gauge_exact.py\): <P> = ([0-9.]+)", text).group(1))
    exact = u1_plaquette(2.0, 64)
    assert abs(stated - exact) < 0.5e-5, (stated, exact)
    res = ns["res_plaquette"]
    assert abs(res.value - exact) < 4 * res.error, (res.value, res.error, exact)
    # reweighting N(0, 1) -> N(mu, 1): <x> = mu within 4 sigma, the error is the exact
    # sqrt(exp(mu^2)(1 + mu^2)/N) (its own relative error ~ sqrt((W + 1/2)/N) < 1%), and the ESS
    # exp(-mu^2) (relative statistical error <= 0.8% for N = 1e5, from the moments
    # E w^k = exp(k(k-1) mu^2/2) of the weights: the band is 4 sigma)
    mu, n, obs = ns["mu"], ns["x"].size, ns["obs"]
    assert abs(obs.value - mu) < 4 * obs.error
    assert obs.error == pytest.approx(math.sqrt(math.exp(mu ** 2) * (1 + mu ** 2) / n), rel=0.04)
    assert ns["ess"] == pytest.approx(math.exp(-mu ** 2), rel=0.032)
    # the fit example: the model mass 0.5 within 4 sigma, the range inside [1, T/2]
    t_min, t_max = ns["t_range"]
    assert 1 <= t_min < t_max <= ns["T"] // 2
    assert abs(ns["res"].value - 0.5) < 4 * ns["res"].error
    # the pyerrors hand-over: four replicas, and pyerrors' error is the library's
    assert ns["pe_plaq"].names == [f"u1_b2_8x8|r{c}" for c in range(4)]
    assert ns["pe_plaq"].dvalue == pytest.approx(ns["res_pe"].error, rel=1e-10)
    # the AMA example: the known mean 0.7 within 4 sigma despite the approximation's bias 0.2
    ama_res = ns["res_ama"]
    assert abs(ama_res.value - 0.7) < 4 * ama_res.error
    assert abs(ama_res.approx.value - 0.7) > 4 * ama_res.approx.error


def _multigrid(ns, text):
    # "the cost falls from 0.45 to about 0.05 and FGMRES takes 20 steps ... against 55"
    rec, info, plain = ns["rec"], ns["info"], ns["plain"]
    assert abs(rec.cost[0] - 0.45) < 0.01 and rec.cost[-1] < 0.08
    assert info.all_converged and plain.iterations.tolist() == [55, 55]
    assert np.all(info.iterations <= 22)


def _attention(ns, text):
    # the CASK example: gauge covariance to round-off, beta = 0 is plain stout
    assert ns["cov"] < 1e-12 and ns["same"] < 1e-14
    assert ns["grad"].shape == (4,)


def _cli(ns, text):
    import json
    from pathlib import Path
    ck = ns["ck"]
    assert ck.state["next_update"] == ck.state["total_updates"]           # a finished run
    assert tuple(ck.state["field"].shape)[1:] == (8, 8)
    assert ns["start"] == 5 and len(ns["losses"]) == 5                    # the training resume
    np.testing.assert_array_equal(ns["theta"], ns["got"]["parameters"]["theta"])
    assert ns["code"] == 0 and "sampler" in json.loads(Path("runs/b/summary.json").read_text())


def _parallel(ns, text):
    from lattice_ml.backend import to_numpy
    assert ns["comm"].size == 1 and ns["block"].count == 8        # one process: every chain
    assert to_numpy(ns["dh"]).shape == (8,)
    assert np.isfinite(float(to_numpy(ns["m2"])))


CHECKS = {"docs/attention.md": _attention, "docs/parallel.md": _parallel, "docs/cli.md": _cli,
          "docs/getting-started.md": _getting_started, "docs/fermions.md": _fermions,
          "docs/gauge.md": _gauge, "docs/flows.md": _flows, "docs/statistics.md": _statistics,
          "docs/multigrid.md": _multigrid}


DOCS_WITH_EXAMPLES = [
    "README.md", "docs/getting-started.md", "docs/smearing.md", "docs/training.md",
    "docs/fermions.md", "docs/gauge.md", "docs/flows.md", "docs/io.md", "docs/kernels.md",
    "docs/statistics.md", "docs/gauge_flows.md", "docs/gauge_flows_coupling.md",
    "docs/interop.md", "docs/multigrid.md", "docs/attention.md", "docs/slhmc.md",
    "docs/parallel.md", "docs/cli.md"
]


def test_every_page_with_python_examples_is_run():
    """A page with a ```python block is in the list above (the tutorials run in
    tests/test_tutorials.py), so no example can be added that CI never executes."""
    pages = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")
                   if "tutorials" not in p.parts and python_blocks(p))
    missing = [p for p in pages if p not in DOCS_WITH_EXAMPLES]
    assert not missing, f"pages with python examples that no test runs: {missing}"


@pytest.mark.parametrize("doc", DOCS_WITH_EXAMPLES)
def test_python_examples_run(doc, tmp_path, monkeypatch):
    path = ROOT / doc
    if not path.exists():
        pytest.skip(f"{doc} not in this checkout (installed package only)")
    if doc == "docs/interop.md":
        pytest.importorskip("torch", reason="the interop page needs PyTorch (.[interop])")
    monkeypatch.chdir(tmp_path)            # files the examples write stay out of the checkout
    blocks = python_blocks(path)
    assert blocks, f"{doc} has no python example"
    namespace = {}
    for code in blocks:
        exec(compile(code, str(path), "exec"), namespace)
        if "plaq = np.load" in code:       # statistics.md: keep the plaquette result by name
            namespace["res_plaquette"] = namespace["res"]
    if doc in CHECKS:
        CHECKS[doc](namespace, path.read_text())
