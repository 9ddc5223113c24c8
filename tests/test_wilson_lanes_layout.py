"""``WilsonDirac(..., layout="lanes")``: the vectorised lanes kernel behind the operator
(lattice_ml.kernels.wilson_simd) against the array-API reference (``kernel_mode("off")``) on
Haar-random SU(3) links: every operator method, with and without clover, both precisions,
antiperiodic and periodic time, an odd extent; gamma5-hermiticity; CG through the solver-level
hook (one conversion of the source and one of the solution) and even/odd CG; the fallback under
``kernel_mode("off")``; the refusals (not 4D SU(3), not NumPy)."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name
from lattice_ml.dispatch import kernel_mode
from lattice_ml.fermions.gamma import gamma5
from lattice_ml.fermions.solvers import cg
from lattice_ml.fermions.wilson import WilsonDirac
from lattice_ml.groups import haar_random
from lattice_ml.kernels import wilson_simd as ws

NP = namespace_by_name("numpy")
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}
METHODS = ("apply", "apply_dagger", "normal", "hopping", "local")
EO_METHODS = ("apply_eo", "apply_eo_dagger", "normal_eo", "prepare_source")


def fields(sites, real, batch=2, seed=11, N=3):
    rng = RandomStreams(seed, batch, NP, dtype=real)
    U = np.ascontiguousarray(haar_random(rng, (len(sites), *sites), N))
    psi = np.ascontiguousarray(rng.complex_normal((*sites, 4 if len(sites) == 4 else 2, N)))
    return U, psi


@pytest.fixture
def lanes_calls(monkeypatch):
    """Counts the lanes kernel's calls and the conversions of fields to the lanes layout."""
    n = {"hop": 0, "to": 0}
    hop, to = ws.wilson_hop_lanes, ws.spinor_to_lanes

    def counted_hop(*a, **k):
        n["hop"] += 1
        return hop(*a, **k)

    def counted_to(*a, **k):
        n["to"] += 1
        return to(*a, **k)
    monkeypatch.setattr(ws, "wilson_hop_lanes", counted_hop)
    monkeypatch.setattr(ws, "spinor_to_lanes", counted_to)
    return n


def rel_err(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    scale = float(np.max(np.abs(b)))
    assert scale > 0.1
    return float(np.max(np.abs(a - b))) / scale


# lanes (1, 2, 2, 2) for both float64 lattices (an odd time extent, not split) and
# (2, 2, 2, 2) for float32: two compilations of the kernel
@pytest.mark.parametrize("real,sites,boundary", [("float64", (4, 4, 4, 4), "antiperiodic"),
                                                 ("float64", (5, 4, 4, 4), "periodic"),
                                                 ("float64", (5, 4, 4, 4), "antiperiodic"),
                                                 ("float32", (4, 4, 4, 4), "antiperiodic")])
@pytest.mark.parametrize("csw", [0.0, 1.3])
def test_lanes_layout_equals_reference(real, sites, boundary, csw, lanes_calls):
    U, psi = fields(sites, real)
    Wl = WilsonDirac(U, 0.07, boundary=boundary, csw=csw, layout="lanes")
    Ws = WilsonDirac(U, 0.07, boundary=boundary, csw=csw)
    even = all(L % 2 == 0 for L in sites)
    for m in METHODS + (EO_METHODS if even else ()):
        got = getattr(Wl, m)(psi)
        with kernel_mode("off"):
            want = getattr(Ws, m)(psi)
        assert rel_err(got, want) <= 30 * EPS[real], m
    if even:
        got = Wl.reconstruct(Wl.even(psi), psi)
        with kernel_mode("off"):
            want = Ws.reconstruct(Ws.even(psi), psi)
        assert rel_err(got, want) <= 30 * EPS[real]
    assert lanes_calls["hop"] >= len(METHODS)          # the lanes kernel ran
    # gamma5-hermiticity, D^dag = g5 D g5, in the lanes layout
    g5 = gamma5(4, NP, dtype=U.dtype)
    assert rel_err(Wl.apply_dagger(psi), g5 @ Wl.apply(g5 @ psi)) <= 30 * EPS[real]


@pytest.mark.parametrize("real,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_cg_through_the_solver_hook_converts_once(real, tol, lanes_calls):
    sites = (4, 4, 4, 4)
    U, b = fields(sites, real, seed=4)
    Wl = WilsonDirac(U, 0.1, layout="lanes")
    Ws = WilsonDirac(U, 0.1)
    x, info = cg(Wl.normal, b, tol=tol)
    assert lanes_calls["to"] == 1                      # the source, once (not per iteration)
    assert lanes_calls["hop"] == 2 * info.matvecs
    with kernel_mode("off"):
        y, ref = cg(Ws.normal, b, tol=tol)
        r = b - Ws.normal(x)
    np.testing.assert_array_equal(info.iterations, ref.iterations)
    assert x.dtype == b.dtype and info.all_converged
    assert float(np.max(np.sqrt(np.sum(np.abs(r) ** 2, axis=(1, 2, 3, 4, 5, 6))
                                / np.sum(np.abs(b) ** 2, axis=(1, 2, 3, 4, 5, 6))))) <= 3 * tol
    assert rel_err(x, y) <= 1e3 * EPS[real] * ref.iterations.max()
    # a start vector and a callback (which sees the iterate in the library layout)
    seen = []
    x2, info2 = cg(Wl.normal, b, x0=x, tol=tol, callback=lambda k, xk, rel: seen.append(xk))
    assert all(v.shape == b.shape for v in seen)
    assert info2.iterations.max() <= 2


def test_even_odd_cg_in_the_lanes_layout_solves_the_full_system(lanes_calls):
    U, eta = fields((4, 4, 4, 4), "float64", seed=8)
    W = WilsonDirac(U, 0.05, layout="lanes")
    src = W.apply_eo_dagger(W.prepare_source(eta))
    n0 = lanes_calls["to"]
    xe, info = cg(W.normal_eo, src, tol=1e-11)
    # the source and the even-site mask (built once per operator), not one per iteration
    assert lanes_calls["to"] - n0 <= 2 < info.iterations.max() and info.all_converged
    psi = W.reconstruct(xe, eta)
    with kernel_mode("off"):
        res = WilsonDirac(U, 0.05).apply(psi) - eta
    assert float(np.max(np.abs(res))) <= 1e-9 * float(np.max(np.abs(eta)))


def test_lanes_layout_with_kernels_off_takes_the_reference(lanes_calls):
    U, psi = fields((4, 4, 4, 4), "float64", batch=1)
    W = WilsonDirac(U, 0.1, layout="lanes")
    with kernel_mode("off"):
        a = W.apply(psi)
        x, info = cg(W.normal, psi, tol=1e-8)
        want = WilsonDirac(U, 0.1).apply(psi)
    assert lanes_calls == {"hop": 0, "to": 0}
    np.testing.assert_array_equal(a, want)
    assert info.all_converged


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict"])
def test_lanes_layout_refuses_what_the_kernel_cannot_do(xp_name):
    xp = NP if xp_name == "numpy" else pytest.importorskip(xp_name)
    U4, _ = fields((4, 4, 4, 4), "float64", batch=1)
    U2, _ = fields((4, 4), "float64", batch=1)
    Uu1, _ = fields((4, 4, 4, 4), "float64", batch=1, N=1)
    with pytest.raises(ValueError, match="unknown layout"):
        WilsonDirac(xp.asarray(U4), 0.1, layout="soa")
    with pytest.raises(ValueError, match="4D SU\\(3\\).*D = 2"):
        WilsonDirac(xp.asarray(U2), 0.1, layout="lanes")
    with pytest.raises(ValueError, match="4D SU\\(3\\).*N = 1"):
        WilsonDirac(xp.asarray(Uu1), 0.1, layout="lanes")
    if xp_name == "array_api_strict":
        with pytest.raises(ValueError, match="takes NumPy arrays"):
            WilsonDirac(xp.asarray(U4), 0.1, layout="lanes")
        # the site layout's operators carry no hook there: cg runs them as before
        W = WilsonDirac(xp.asarray(U4), 0.1)
        assert W.normal.solver_layout(None) is None
    else:
        with pytest.raises(ValueError, match="do not divide"):
            WilsonDirac(U4, 0.1, layout="lanes", lanes=(1, 1, 3, 1))
