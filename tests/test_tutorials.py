"""The tutorials (docs/tutorials/*.md, jupytext Markdown notebooks) run cell by cell as the site
build runs them (docs/hooks/execute_tutorials.py), and the numbers their text states hold."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gauge_exact import u1_plaquette  # noqa: E402
from test_docs import python_blocks  # noqa: E402

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"


def _first_plaquette(ns):
    # the tutorial's inline character expansion is the one of tests/gauge_exact.py
    assert ns["exact"] == pytest.approx(u1_plaquette(2.0, 64), rel=1e-12)
    assert abs(ns["res"].value - ns["exact"]) < 4 * ns["res"].error


def _schwinger(ns):
    assert ns["quenched"] == pytest.approx(u1_plaquette(2.0, 36), rel=1e-12)
    assert np.mean(ns["acc"]) > 0.9
    # what the text says: the determinant raises the plaquette above the quenched value
    assert ns["P"].value > ns["quenched"]
    assert 0 < ns["C"].value < 2 and ns["C"].error < 0.05


def _gauge_flow(ns):
    assert ns["e_identity"] < ns["e_lo"] < ns["e_learned"]
    assert ns["check"]["rms"] < 0.01
    assert abs(ns["P"].value - ns["exact"]) < 4 * ns["P"].error


def _gpu(ns):
    import lattice_ml
    from lattice_ml.backend import backend_name
    assert backend_name(ns["xp"]) in ("numpy", "cupy")
    P = ns["P"]
    assert P.shape == (4,) and np.all((0 < P) & (P < 1))
    results = Path(lattice_ml.__file__).resolve().parents[1] / "benchmarks" / "results"
    if results.exists():                               # a checkout: the record was read
        assert ns["records"] and 0 < ns["doc"]["results"][0]["frac_bw"] < 1


def _phi4_flow(ns):
    hmc, flow = ns["res_hmc"], ns["res_flow"]
    assert abs(hmc.value) < 4 * hmc.error and abs(flow.value) < 4 * flow.error   # <M> = 0
    assert flow.tau_int < hmc.tau_int / 5            # the text: the flow decorrelates M
    assert ns["sampler"].summary(ns["hist"])["acceptance"] > 0.2


def _train_stout(ns):
    # the backward's gradient is the central difference's (float64, h = 1e-5: O(h^2) ~ 1e-10)
    assert ns["fd_rel"] < 1e-7
    # training recovers the teacher's weights, and the loss falls by many orders of magnitude
    np.testing.assert_allclose(ns["theta"], ns["rho_true"], rtol=0, atol=1e-4)
    assert ns["L_final"] < 1e-8 * ns["losses"][0]
    # what the text says: the smeared action of the student is the teacher's, the thin one not
    np.testing.assert_allclose(ns["S_student"], ns["S_teacher"], rtol=1e-6)
    assert np.all(np.abs(ns["S_thin"] - ns["S_teacher"]) > 1.0)


CHECKS = {"first-plaquette": _first_plaquette, "schwinger": _schwinger,
          "gauge-flow": _gauge_flow, "gpu": _gpu, "phi4-flow": _phi4_flow,
          "train-stout": _train_stout}


def test_every_tutorial_is_checked_and_listed():
    if not TUTORIALS.exists():
        pytest.skip("docs/ not in this checkout")
    pages = {p.stem for p in TUTORIALS.glob("*.md")} - {"index"}
    assert pages == set(CHECKS)
    index = (TUTORIALS / "index.md").read_text()
    mkdocs = (TUTORIALS.parents[1] / "mkdocs.yml").read_text()
    for stem in pages:
        assert f"({stem}.md)" in index and f"tutorials/{stem}.md" in mkdocs


@pytest.mark.parametrize("name", [
    "first-plaquette", "gauge-flow", "gpu", "train-stout",
    pytest.param("schwinger", marks=pytest.mark.slow),    # ~30 s CPU; the site build runs it too
    pytest.param("phi4-flow", marks=pytest.mark.slow),    # ~25 s CPU
])
def test_tutorial_runs_and_its_numbers_hold(name, tmp_path, monkeypatch):
    path = TUTORIALS / f"{name}.md"
    if not path.exists():
        pytest.skip("docs/ not in this checkout")
    monkeypatch.chdir(tmp_path)
    ns = {}
    for code in python_blocks(path):
        exec(compile(code, str(path), "exec"), ns)
    CHECKS[name](ns)
    if name == "first-plaquette":
        assert (tmp_path / "history.png").stat().st_size > 10_000     # the picture it draws
    if name == "train-stout":
        assert (tmp_path / "training.png").stat().st_size > 10_000


def test_the_site_hook_puts_outputs_and_pictures_under_the_cells(tmp_path):
    """The hook executes a page and inserts what each cell prints and the PNGs it writes."""
    sys.path.insert(0, str(TUTORIALS.parent / "hooks"))
    from execute_tutorials import on_page_markdown

    class File:
        src_uri = "tutorials/demo.md"

    class Page:
        file = File()

    md = ("# demo\n\n```python\nx = 6 * 7\nprint('x =', x)\n```\n\nmiddle paragraph\n\n"
          "```python\nfrom matplotlib.figure import Figure\nfig = Figure()\n"
          "fig.subplots().plot([0, 1], [x, x])\nfig.savefig('line.png')\n```\n")
    out = on_page_markdown(md, Page(), {"site_dir": str(tmp_path)}, None)
    assert "```text\nx = 42\n```" in out
    assert "![line](data:image/png;base64," in out
    assert out.index("x = 42") < out.index("middle paragraph") < out.index("data:image/png")


def test_the_api_pages_docstring_rewrite():
    """docs/hooks/griffe_docstrings.py: numpy item sections become lists, roles code spans, and
    free text after a section (which the numpy parser would drop) is kept."""
    sys.path.insert(0, str(TUTORIALS.parent / "hooks"))
    pytest.importorskip("griffe")
    from griffe_docstrings import rewrite

    doc = ("Smear links, see :func:`stout_smear` and :class:`~lattice_ml.smearing.StoutContext`.\n"
           "\nParameters\n----------\nn_layers : int\n    How many.\nx, y : arrays\n\n"
           "Layout: the rest.\n\nReturns\n-------\nGammaResult\n    The result.\n\n"
           "Layouts\n-------\nA topic heading stays.")
    out = rewrite(doc)
    assert "`stout_smear`" in out and "`StoutContext`" in out and ":func:" not in out
    assert "**Parameters**" in out and "Parameters\n---" not in out
    assert "* `n_layers` : int  \n    How many." in out and "* `x`, `y` : arrays" in out
    assert "\nLayout: the rest." in out                      # free text kept, not an item
    assert "* `GammaResult`  \n    The result." in out
    assert "Layouts\n-------\nA topic heading stays." in out  # not an item section
