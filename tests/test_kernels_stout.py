"""Numba kernels for one 4D SU(3) stout layer with the plaquette loop set (kernels/stout.py):
forward, link force and weight gradient equal to the array-API reference to round-off on
Haar-random links for every weight shape (scalar, per direction, per site, per configuration),
with and without the fields kept by the forward; the kernel backward against central finite
differences (float64) along every generator and for every weight; dispatch through
stout_smear / stout_backward / StoutSmearing; the CUDA kernels through Numba's simulator (or on
a GPU) on a 2^4 lattice."""

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.dispatch import kernel_mode, selected, trace
from lattice_ml.gauge import GaugeAction
from lattice_ml.groups import haar_random, project_algebra, random_near_identity, trace as tr
from lattice_ml.kernels import stout as kstout
from lattice_ml.kernels._common import cuda_usable
from lattice_ml.smearing import SmearedAction, StoutSmearing, stout_backward, stout_smear
from lattice_ml.smearing.stout import stout_plaquette_layer, stout_plaquette_layer_backward

from fd_checks import worst_fd_deviation

NP = namespace_by_name("numpy")
TOL = {np.complex128: 1e-12, np.complex64: 2e-5}
SHAPE = (4, 3, 2, 4)
FWD = ("stout_plaquette_forward", "cpu:stout_plaquette_forward_su3_4d")
BWD = ("stout_plaquette_backward", "cpu:stout_plaquette_backward_su3_4d")


def rel_err(a, b):
    a, b = to_numpy(a), to_numpy(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def haar_links(shape=SHAPE, batch=2, dtype=np.complex128, seed=5):
    return haar_random(RandomStreams(seed, batch, NP), (4, *shape), 3).astype(dtype)


def weights(kind, shape=SHAPE, batch=2, seed=11):
    """Weights in every shape stout_smear takes."""
    g = np.random.default_rng(seed)
    if kind == "scalar":
        return 0.12
    if kind == "direction":
        return np.array([0.05, 0.11, 0.02, 0.17])
    if kind == "site":
        return 0.1 + 0.05 * g.standard_normal((4, *shape))
    return 0.1 + 0.05 * g.standard_normal((batch, 4, *shape))


class LinearLoss:
    """L(U') = S_iwasaki(U') + sum Re Tr(W U'); force F' = -dL/dU'."""

    def __init__(self, U, seed=9):
        self.act = GaugeAction(1.7, 3, "iwasaki")
        g = np.random.default_rng(seed)
        self.W = (g.standard_normal(U.shape) + 1j * g.standard_normal(U.shape)).astype(U.dtype)

    def value(self, Up):
        return float(np.sum(self.act.action(Up))) + float(np.sum(np.real(tr(Up @ self.W))))

    def force(self, Up):
        return self.act.force(Up) + 0.5 * project_algebra(Up @ self.W)


@pytest.fixture(scope="module", params=[np.complex128, np.complex64], ids=["c128", "c64"])
def links(request):
    return haar_links(dtype=request.param)


@pytest.mark.parametrize("kind", ["scalar", "direction", "site", "batch"])
@pytest.mark.parametrize("keep", [None, "links", "all"])
def test_forward_and_backward_equal_reference(links, kind, keep):
    rho = weights(kind)
    tol = TOL[links.dtype.type]
    with trace() as log:
        res = stout_smear(links, rho, keep=keep)
    assert log == [FWD]
    Up, ctx = (res, None) if keep is None else res
    with kernel_mode("off"), trace() as log_ref:
        res_ref = stout_smear(links, rho, keep=keep)
    assert log_ref == [(FWD[0], "reference")]
    Up_ref, ctx_ref = (res_ref, None) if keep is None else res_ref
    assert Up.dtype == links.dtype
    assert rel_err(Up, Up_ref) < tol
    if keep == "all":
        for a, b in zip(ctx.fields, ctx_ref.fields):
            assert rel_err(a, b) < tol
    Fp = LinearLoss(links).force(Up_ref)
    with trace() as log:
        F, g = stout_backward(links, rho, Fp, context=ctx)
    assert log == [BWD]
    with kernel_mode("off"):
        F_ref, g_ref = stout_backward(links, rho, Fp, context=ctx_ref)
    assert F.dtype == links.dtype and np.shape(g) == np.shape(g_ref)
    assert rel_err(F, F_ref) < tol
    assert rel_err(g, g_ref) < tol


def test_kernel_backward_with_reference_context_and_back():
    """A context kept by the reference forward works with the kernel backward and vice versa."""
    U = haar_links()
    rho = weights("direction")
    Fp = LinearLoss(U).force(stout_smear(U, rho))
    with kernel_mode("off"):
        _, ctx_ref = stout_smear(U, rho, keep="all")
        F_ref, g_ref = stout_backward(U, rho, Fp)
    _, ctx = stout_smear(U, rho, keep="all")
    F1, g1 = stout_backward(U, rho, Fp, context=ctx_ref)
    with kernel_mode("off"):
        F2, g2 = stout_backward(U, rho, Fp, context=ctx)
    for F, g in ((F1, g1), (F2, g2)):
        assert rel_err(F, F_ref) < 1e-12 and rel_err(g, g_ref) < 1e-12


@pytest.mark.parametrize("directions", ["isotropic", "anisotropic", "per_direction"])
def test_stout_network_uses_the_kernels(directions):
    U = haar_links(batch=1)
    Fp = GaugeAction(6.0, 3, "wilson").force(U)
    out = {}
    for mode in ("auto", "off"):
        with kernel_mode(mode), trace() as log:
            net = StoutSmearing(3, "plaquette", D=4, directions=directions, rho=0.08)
            Up = net.forward(U)
            F, grad = net.backward(Fp)
        out[mode] = (Up, F, grad)
        impl = {name for _, name in log}
        assert impl == ({FWD[1], BWD[1]} if mode == "auto" else {"reference"})
        assert len(log) == 6
    for a, b in zip(out["auto"], out["off"]):
        assert rel_err(a, b) < 1e-12


def test_reference_paths():
    U = haar_links(batch=1)
    R = np.full((1, 1, 1, 1, 1, 1), 0.1)
    assert selected(FWD[0], U, R) == FWD[1]
    assert selected(FWD[0], U, R, False, "eigh") == "reference"      # another exp method
    assert selected(FWD[0], haar_random(RandomStreams(1, 1, NP), (4, 2, 2, 2, 2), 2),
                    R) == "reference"                                    # SU(2)
    with kernel_mode("off"):
        assert selected(BWD[0], U, R, U) == "reference"
    with trace() as log:   # other loop sets never reach the plaquette kernels
        stout_smear(U, [0.1, 0.02], ["plaquette", "rectangle"])
    assert log == []
    xps = pytest.importorskip("array_api_strict")
    with trace() as log:
        stout_smear(xps.asarray(U), 0.1)
    assert log == [(FWD[0], "reference")]


# ------------------------------------------------------------------------------------------
# finite differences of the kernel backward (float64)
# ------------------------------------------------------------------------------------------
class _SmearedLoss:
    """S(U) = L(stout(U)) with the force through the kernel backward (for worst_fd_deviation)."""

    def __init__(self, U, rho):
        self.rho = rho
        self.loss = LinearLoss(U)

    def action(self, U):
        return np.array([self.loss.value(stout_smear(U, self.rho))])

    def force(self, U):
        Fp = self.loss.force(stout_smear(U, self.rho))
        with trace() as log:
            F, _ = stout_backward(U, self.rho, Fp)
        assert log == [BWD]
        return F


def test_kernel_backward_against_finite_differences():
    shape = (2, 3, 2, 2)
    U = random_near_identity(RandomStreams(2, 1, NP), (4, *shape), 3, 0.8)
    rho = weights("direction")
    # the link force along every generator at one link of every direction
    assert worst_fd_deviation(_SmearedLoss(U, rho), U, NP, h=1e-5) < 1e-7
    # the weight gradient, every direction
    loss = LinearLoss(U)
    _, g = stout_backward(U, rho, loss.force(stout_smear(U, rho)))
    h = 1e-6
    for mu in range(4):
        vals = []
        for s in (h, -h):
            r = rho.copy()
            r[mu] += s
            vals.append(loss.value(stout_smear(U, r)))
        dL = (vals[0] - vals[1]) / (2 * h)
        assert abs(dL) > 1e-2
        assert abs(g[mu] - dL) < 1e-6 * (1 + abs(dL)), (mu, g[mu], dL)


def test_smeared_action_force_through_kernels():
    """SmearedAction (HMC's view) gets the same force with and without kernels."""
    U = haar_links(batch=1)
    act = SmearedAction(GaugeAction(5.5, 3, "symanzik"), StoutSmearing(2, "plaquette", rho=0.1))
    F = act.force(U)
    with kernel_mode("off"):
        assert rel_err(F, act.force(U)) < 1e-12


# ------------------------------------------------------------------------------------------
# CUDA kernels: simulator on the CPU (tests/conftest.py), the device where there is a GPU
# ------------------------------------------------------------------------------------------
def _cuda_arrays(*arrays):
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return tuple(cupy.asarray(a) for a in arrays)
    except Exception:
        pass
    return arrays


@pytest.mark.skipif(not cuda_usable(), reason="CUDA (or its simulator) is not usable here")
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64], ids=["c128", "c64"])
def test_cuda_kernels_equal_reference(dtype):
    U = haar_links((2, 2, 2, 2), batch=1, dtype=dtype, seed=8)
    rdt = np.float64 if dtype == np.complex128 else np.float32
    rho = np.array([0.05, 0.11, 0.02, 0.17], dtype=rdt).reshape(1, 4, 1, 1, 1, 1)
    with kernel_mode("off"):
        ref = stout_plaquette_layer(U, rho, True)
        Fp = LinearLoss(U).force(ref[0])
        F_ref, g_ref = stout_plaquette_layer_backward(U, rho, Fp)
    Ud, rd, Fd = _cuda_arrays(U, rho, Fp)
    out = kstout.stout_forward_cuda(Ud, rd, True)
    for a, b in zip(out, ref):
        assert a.dtype == dtype and rel_err(a, b) < TOL[dtype]
    for fields in (None, out[1:]):
        F, g = kstout.stout_backward_cuda(Ud, rd, Fd, fields)
        assert F.dtype == dtype and g.dtype == rdt
        assert rel_err(F, F_ref) < TOL[dtype] and rel_err(g, g_ref) < TOL[dtype]
