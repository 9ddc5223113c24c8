"""Numba kernels of the Wilson and staggered hopping terms (lattice_ml.kernels.wilson,
lattice_ml.kernels.staggered) against the array-API reference, on Haar-random SU(3) links:
CPU njit kernels (both precisions, full and even/odd, both time boundaries, H and H^dag,
12-real link compression, batch broadcasting), the dispatch of the operators to them, the
LATTICE_ML_KERNELS=off switch, and the CUDA kernels (Numba's simulator on tiny lattices when
no GPU is present)."""

import numpy as np
import pytest

from lattice_ml import dispatch
from lattice_ml.backend import RandomStreams, namespace_by_name
from lattice_ml.dispatch import kernel_mode, trace
from lattice_ml.fermions import StaggeredDirac, WilsonDirac
from lattice_ml.fermions.staggered import staggered_hop
from lattice_ml.fermions.wilson import compress_links, decompress_links, wilson_hop
from lattice_ml.groups import haar_random
from lattice_ml.kernels import staggered as kstag
from lattice_ml.kernels import wilson as kwil
from lattice_ml.kernels._common import cuda_simulator, cuda_usable

NP = namespace_by_name("numpy")
SITES = (4, 2, 4, 2)          # CPU kernels: T, X, Y, Z (all even for even/odd)
TINY = (2, 2, 2, 2)           # CUDA simulator (Python per thread)
DTYPES = {"complex64": ("float32", 50 * np.finfo(np.float32).eps),
          "complex128": ("float64", 50 * np.finfo(np.float64).eps)}


def fields(sites, n_spin, dtype, batch=2, seed=7):
    """Haar SU(3) links [batch, 4, *sites, 3, 3] and a complex normal field."""
    real, _ = DTYPES[dtype]
    rng = RandomStreams(seed, batch, NP, dtype=real)
    U = haar_random(rng, (4, *sites), 3)
    psi = rng.complex_normal((*sites, n_spin, 3))
    return np.ascontiguousarray(U), np.ascontiguousarray(psi)


def assert_close(got, want, tol):
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = float(np.max(np.abs(want)))
    assert scale > 0.1  # a nonzero comparison
    err = float(np.max(np.abs(got - want)))
    assert err <= tol * scale, f"max deviation {err:.3g} > {tol:.1g} x {scale:.3g}"


# ------------------------------------------------------------------------------------------
# CPU kernels = reference
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_wilson_cpu_kernel_equals_reference(dtype):
    U, psi = fields(SITES, 4, dtype)
    U12 = np.ascontiguousarray(compress_links(U))
    tol = DTYPES[dtype][1]
    for sign in (1, -1):
        for ap in (True, False):
            for parity in (None, 0, 1):
                want = wilson_hop.reference(U, psi, sign, ap, parity)
                assert_close(kwil.wilson_hop_cpu(U, psi, sign, ap, parity), want, tol)
                got12 = kwil.wilson_hop_cpu(U12, psi, sign, ap, parity)
                assert_close(got12, want, 4 * tol)
    # the parity results are the full result on that parity and exactly zero on the other
    full = kwil.wilson_hop_cpu(U, psi)
    odd = np.indices(SITES).sum(axis=0) % 2 == 1
    even_part = kwil.wilson_hop_cpu(U, psi, 1, True, 0)
    assert np.all(even_part[:, odd] == 0)
    np.testing.assert_array_equal(even_part[:, ~odd], full[:, ~odd])
    # links of batch 1 act on every field of the batch (and a field of batch 1 on every link)
    assert_close(kwil.wilson_hop_cpu(U[:1], psi), wilson_hop.reference(U[:1], psi), tol)
    assert_close(kwil.wilson_hop_cpu(U, psi[1:]), wilson_hop.reference(U, psi[1:]), tol)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_staggered_cpu_kernel_equals_reference(dtype):
    U, chi = fields(SITES, 1, dtype)
    U12 = np.ascontiguousarray(compress_links(U))
    tol = DTYPES[dtype][1]
    for ap in (True, False):
        for parity in (None, 0, 1):
            want = staggered_hop.reference(U, chi, ap, parity)
            assert_close(kstag.staggered_hop_cpu(U, chi, ap, parity), want, tol)
            assert_close(kstag.staggered_hop_cpu(U12, chi, ap, parity), want, 4 * tol)
    assert_close(kstag.staggered_hop_cpu(U[:1], chi), staggered_hop.reference(U[:1], chi), tol)


def test_link_compression_roundtrip_and_kernel():
    U, psi = fields(SITES, 4, "complex128", batch=1)
    U12 = compress_links(U)
    assert U12.shape == U.shape[:-2] + (2, 3)
    np.testing.assert_allclose(decompress_links(U12), U, atol=1e-14)
    a = kwil.wilson_hop_cpu(U, psi)
    b = kwil.wilson_hop_cpu(np.ascontiguousarray(U12), psi)
    assert_close(b, a, 1e-13)
    with pytest.raises(ValueError, match="SU\\(3\\)"):
        compress_links(U[..., :2, :2])


# ------------------------------------------------------------------------------------------
# dispatch: the operators run the kernels for NumPy arrays, the reference when switched off
# ------------------------------------------------------------------------------------------
def _wilson_ops(W, psi):
    return {"apply": W.apply(psi), "apply_dagger": W.apply_dagger(psi),
            "apply_eo": W.apply_eo(psi), "normal_eo": W.normal_eo(psi),
            "prepare_source": W.prepare_source(psi), "reconstruct": W.reconstruct(psi, psi)}


def test_wilson_operator_dispatches_to_the_kernel(monkeypatch):
    U, psi = fields(SITES, 4, "complex128")
    W = WilsonDirac(U, mass=0.1, csw=1.0)
    with trace() as log:
        fast = _wilson_ops(W, psi)
    assert log and all(impl == "cpu:wilson_hop" for op, impl in log)
    monkeypatch.setenv(dispatch.ENV_VAR, "off")
    with trace() as log:
        slow = _wilson_ops(W, psi)
    assert log and all(impl == "reference" for op, impl in log)
    for name in fast:
        assert_close(fast[name], slow[name], 1e-13)


def test_staggered_operator_dispatches_to_the_kernel():
    U, chi = fields(SITES, 1, "complex64")
    S = StaggeredDirac(U, mass=0.2)
    with trace() as log:
        fast = [S.apply(chi), S.apply_eo(chi), S.prepare_source(chi)]
    assert log and all(impl == "cpu:staggered_hop" for op, impl in log)
    with kernel_mode("off"), trace() as log:
        slow = [S.apply(chi), S.apply_eo(chi), S.prepare_source(chi)]
    assert all(impl == "reference" for op, impl in log)
    for a, b in zip(fast, slow):
        assert_close(a, b, DTYPES["complex64"][1])


def test_kernels_decline_what_they_do_not_handle():
    rng = RandomStreams(1, 1, NP)
    U2 = haar_random(rng, (4, *SITES), 2)            # SU(2): no kernel
    psi2 = rng.complex_normal((*SITES, 4, 2))
    assert dispatch.selected("wilson_hop", U2, psi2, 1, True, None) == "reference"
    U, psi = fields(SITES, 4, "complex128", batch=1)
    assert dispatch.selected("wilson_hop", U, psi, 1, True, None) == "cpu:wilson_hop"
    assert dispatch.selected("wilson_hop", U, psi.astype(np.complex64)) == "reference"
    assert dispatch.selected("wilson_hop", U, psi[..., ::-1, :]) == "reference"  # not contiguous
    U2d = haar_random(rng, (2, 4, 4), 3)             # D = 2
    assert dispatch.selected("wilson_hop", U2d, rng.complex_normal((4, 4, 2, 3))) == "reference"
    xps = pytest.importorskip("array_api_strict")
    Us, psis = xps.asarray(U), xps.asarray(psi)
    with trace() as log:
        out = wilson_hop(Us, psis)
    assert log == [("wilson_hop", "reference")]
    assert_close(np.asarray(out), kwil.wilson_hop_cpu(U, psi), 1e-13)


# ------------------------------------------------------------------------------------------
# CUDA kernels (simulator on the CPU, or a real GPU)
# ------------------------------------------------------------------------------------------
def _device(a):
    """NumPy under the simulator; CuPy arrays on a real GPU."""
    if cuda_simulator():
        return a
    cupy = pytest.importorskip("cupy")
    return cupy.asarray(a)


def _host(a):
    return a if isinstance(a, np.ndarray) else a.get()


needs_cuda = pytest.mark.skipif(not cuda_usable(), reason="no CUDA GPU and no CUDA simulator")


@needs_cuda
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_wilson_cuda_kernel_equals_reference(dtype):
    U, psi = fields(TINY, 4, dtype, batch=1)
    tol = DTYPES[dtype][1]
    Ud, psid = _device(U), _device(psi)
    U12d = _device(np.ascontiguousarray(compress_links(U)))
    for sign, ap, parity, links in ((1, True, None, Ud), (-1, False, 0, Ud),
                                    (1, True, 1, U12d)):
        got = _host(kwil.wilson_hop_cuda(links, psid, sign, ap, parity))
        assert_close(got, wilson_hop.reference(U, psi, sign, ap, parity), 4 * tol)


@needs_cuda
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_staggered_cuda_kernel_equals_reference(dtype):
    U, chi = fields(TINY, 1, dtype, batch=1)
    tol = DTYPES[dtype][1]
    Ud, chid = _device(U), _device(chi)
    for ap, parity in ((True, None), (False, 1)):
        got = _host(kstag.staggered_hop_cuda(Ud, chid, ap, parity))
        assert_close(got, staggered_hop.reference(U, chi, ap, parity), tol)


# ------------------------------------------------------------------------------------------
# the CUDA kernels compile for a real GPU (typing and NVVM), also where there is none
# ------------------------------------------------------------------------------------------
_PTX_SCRIPT = r"""
import types as _t
from numba import cuda, types
import numba.cuda.dispatcher as disp
# without a GPU, device functions ask the (absent) driver for the compute capability
disp.get_current_device = lambda: _t.SimpleNamespace(compute_capability=(9, 0))
from lattice_ml.kernels import _dirac_cuda, _phi4_cuda
for kind in ("wilson", "staggered"):
    for ft in (types.float32, types.float64):
        a = ft[::1]
        sig = (a, a, a, types.UniTuple(types.int64, 8), types.int64, ft, ft, ft)
        ptx, _ = cuda.compile_ptx(_dirac_cuda.cuda_loop(kind).py_func, sig, cc=(9, 0))
        assert "ld.global" in ptx and "call." not in ptx, kind
for ft in (types.float32, types.float64):
    sig = (ft[::1], ft[::1], types.int64, types.int64, types.UniTuple(types.int64, 4), ft, ft, ft)
    cuda.compile_ptx(_phi4_cuda.force_kernel().py_func, sig, cc=(9, 0))
print("PTX OK")
"""


@pytest.mark.slow
def test_cuda_kernels_compile_to_ptx_for_sm90(tmp_path):
    """The simulator runs the kernels as Python; this checks that Numba's CUDA target types and
    compiles them (both precisions, helpers inlined: no calls) for an H100 (sm_90). Runs in a
    subprocess without the simulator; skipped without libNVVM."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    # outside the source tree, so that the installed lattice_ml (with its kernels) is imported
    res = subprocess.run([sys.executable, "-c", _PTX_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600, cwd=str(tmp_path))
    if res.returncode != 0 and ("NvvmSupportError" in res.stderr or "libNVVM" in res.stderr
                                or "nvvm" in res.stderr.lower() and "cannot" in res.stderr):
        pytest.skip("libNVVM not available: " + res.stderr.strip().splitlines()[-1])
    assert res.returncode == 0 and "PTX OK" in res.stdout, res.stderr[-3000:]


def test_non_standard_staggered_phases_take_the_reference():
    """The kernels compute the standard eta from the coordinates: other phases must not reach
    them (they would be silently replaced)."""
    U, chi = fields(SITES, 1, "complex128")
    ones = [np.ones((1, *SITES, 1, 1)) for _ in range(4)]
    with trace() as log:
        got = staggered_hop(U, chi, True, None, ones)
    assert log == [("staggered_hop", "reference")]
    np.testing.assert_array_equal(got, staggered_hop.reference(U, chi, True, None, ones))
    # the operator's own phases are marked standard and keep the kernel
    D = StaggeredDirac(U, 0.1)
    with trace() as log:
        D.apply(chi)
    assert ("staggered_hop", "cpu:staggered_hop") in log
