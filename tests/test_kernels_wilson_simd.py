"""The Wilson hopping term in the kernel-internal layouts (lattice_ml.kernels.wilson_simd: CPU
lanes, several sites per SIMD vector; lattice_ml.kernels.wilson_soa: CUDA structure of arrays)
against the array-API reference and the existing interleaved kernel, on Haar-random SU(3)
links: both precisions, several lattice shapes and lane splits (time split or not), H and
H^dag, periodic and antiperiodic time, full and each parity, two-row links, batch
broadcasting; the layout conversions (round trips on NumPy and array-api-strict, and the
documented position of one site); packed SIMD instructions in the generated CPU code; the CUDA
kernel in Numba's simulator (tiny lattices) or on a GPU, and compiled to PTX (slow)."""

import itertools
import platform

import numpy as np
import pytest

from lattice_ml.backend import RandomStreams, namespace_by_name
from lattice_ml.fermions.wilson import compress_links, wilson_hop
from lattice_ml.groups import haar_random
from lattice_ml.kernels import wilson as kwil
from lattice_ml.kernels import wilson_simd as ws
from lattice_ml.kernels import wilson_soa as so
from test_kernels_dirac import _device, _host, needs_cuda  # noqa: E402  (simulator or GPU)

NP = namespace_by_name("numpy")
EPS = {"float32": np.finfo(np.float32).eps, "float64": np.finfo(np.float64).eps}
CDT = {"float32": np.complex64, "float64": np.complex128}


def fields(sites, real, batch=1, seed=5):
    """Haar SU(3) links [batch, 4, *sites, 3, 3] and a complex normal Wilson field."""
    rng = RandomStreams(seed, batch, NP, dtype=real)
    U = haar_random(rng, (4, *sites), 3)
    psi = rng.complex_normal((*sites, 4, 3))
    return np.ascontiguousarray(U), np.ascontiguousarray(psi)


def assert_close(got, want, tol):
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = float(np.max(np.abs(want)))
    assert scale > 0.1  # a nonzero comparison
    err = float(np.max(np.abs(got - want)))
    assert err <= tol * scale, f"max deviation {err:.3g} > {tol:.1g} x {scale:.3g}"


def lanes_hop(U, psi, lanes, *args):
    """wilson_hop through the lanes layout and back."""
    out = ws.wilson_hop_lanes(ws.links_to_lanes(U, lanes), ws.spinor_to_lanes(psi, lanes),
                              *args)
    return ws.spinor_from_lanes(out)


# ------------------------------------------------------------------------------------------
# layouts
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict"])
def test_layout_conversions_round_trip_and_place_sites_as_documented(xp_name):
    xp = pytest.importorskip(xp_name) if xp_name != "numpy" else NP
    sites, lanes = (4, 2, 4, 6), (2, 1, 2, 3)
    U, psi = fields(sites, "float64", batch=2)
    U12 = np.ascontiguousarray(compress_links(U))
    Ux, U12x, psix = xp.asarray(U), xp.asarray(U12), xp.asarray(psi)
    # lanes: round trips (bit for bit)
    pl = ws.spinor_to_lanes(psix, lanes)
    Ul = ws.links_to_lanes(Ux, lanes)
    assert tuple(pl.shape) == (2, 2, 2, 2, 2, 4, 3, 2, *lanes)
    assert tuple(Ul.shape) == (2, 2, 2, 2, 2, 8, 3, 3, 2, *lanes)
    np.testing.assert_array_equal(np.asarray(ws.spinor_from_lanes(pl)), psi)
    np.testing.assert_array_equal(np.asarray(ws.links_from_lanes(Ul)), U)
    np.testing.assert_array_equal(
        np.asarray(ws.links_from_lanes(ws.links_to_lanes(U12x, lanes))), U12)
    assert np.asarray(pl).flags.c_contiguous and np.asarray(Ul).flags.c_contiguous
    # site x_mu = o_mu + L_mu l_mu is lane l of outer site o; hop 2 mu + 1 holds U_mu(x - mu)
    pl, Ul = np.asarray(pl), np.asarray(Ul)
    o, lc = (1, 0, 1, 1), (1, 0, 1, 2)
    x = tuple(oo + 2 * ll for oo, ll in zip(o, lc))
    assert pl[1, *o, 2, 1, 0, *lc] == psi[1, *x, 2, 1].real
    assert pl[1, *o, 2, 1, 1, *lc] == psi[1, *x, 2, 1].imag
    mu, xm = 2, list(x)
    xm[mu] = (xm[mu] - 1) % sites[mu]
    assert Ul[0, *o, 2 * mu + 1, 0, 2, 1, *lc] == U[0, mu, *xm, 0, 2].imag
    # SoA: round trips, and site s of parity p at position p V/2 + s // 2
    ps = so.spinor_to_soa(psix)
    Us = so.links_to_soa(U12x)
    assert tuple(ps.shape) == (2, 4, 3, 2, 192) and tuple(Us.shape) == (2, 4, 2, 3, 2, 192)
    np.testing.assert_array_equal(np.asarray(so.spinor_from_soa(ps, sites)), psi)
    np.testing.assert_array_equal(np.asarray(so.links_from_soa(Us, sites)), U12)
    t, xx, y, z = 3, 1, 2, 5
    lex = ((t * 2 + xx) * 4 + y) * 6 + z
    pos = ((t + xx + y + z) % 2) * 96 + lex // 2
    assert np.asarray(ps)[1, 3, 2, 1, pos] == psi[1, t, xx, y, z, 3, 2].imag


def test_layouts_refuse_what_they_cannot_hold():
    assert ws.default_lanes((8, 8, 8, 8), np.float64) == (1, 2, 2, 2)
    assert ws.default_lanes((8, 8, 8, 8), np.complex64) == (2, 2, 2, 2)
    assert ws.default_lanes((8, 4, 6, 6), np.float64) == (4, 2, 1, 1)
    U, psi = fields((4, 4, 4, 6), "float64")
    with pytest.raises(ValueError, match="do not divide"):
        ws.spinor_to_lanes(psi, (1, 1, 1, 4))
    with pytest.raises(ValueError, match="4D"):
        ws.links_to_lanes(U[:, :2], (1, 1, 1, 2))
    with pytest.raises(ValueError, match="Z even"):
        so.spinor_to_soa(np.zeros((1, 2, 2, 2, 3, 4, 3), np.complex128))
    U3, p3 = fields((3, 2, 2, 2), "float64")    # odd T: a neighbour may share the parity
    with pytest.raises(ValueError, match="even extents"):
        so.wilson_hop_soa(so.links_to_soa(U3), so.spinor_to_soa(p3), (3, 2, 2, 2))
    lanes = (1, 2, 2, 3)                  # outer extents 4, 2, 2, 2: a parity is possible
    Ul, pl = ws.links_to_lanes(U, lanes), ws.spinor_to_lanes(psi, lanes)
    with pytest.raises(TypeError, match="float32 or float64"):
        ws.wilson_hop_lanes(Ul, pl.astype(np.float32), lanes)
    with pytest.raises(ValueError, match="not lanes arrays"):
        ws.wilson_hop_lanes(ws.links_to_lanes(U, (1, 2, 1, 6)), pl)
    odd = (1, 1, 2, 2)                    # outer extents 4, 4, 2, 3: no parity
    with pytest.raises(ValueError, match="parity needs even outer extents"):
        ws.wilson_hop_lanes(ws.links_to_lanes(U, odd), ws.spinor_to_lanes(psi, odd), 1, True, 0)


# ------------------------------------------------------------------------------------------
# the CPU lanes kernel = the reference = the interleaved kernel
# ------------------------------------------------------------------------------------------
# (dtype, lanes, lattices): one compiled kernel per (dtype, lanes), several lattices each;
# float32 splits time too (the boundary factor then differs between the lanes of a vector)
CASES = {"float64": ((1, 2, 2, 2), [(4, 4, 4, 4), (2, 4, 8, 4), (6, 4, 4, 8)]),
         "float32": ((2, 2, 2, 2), [(4, 4, 4, 4), (8, 4, 4, 8), (4, 8, 4, 4)])}


@pytest.mark.parametrize("real", ["float64", "float32"])
def test_lanes_kernel_equals_reference_and_interleaved_kernel(real):
    lanes, lattices = CASES[real]
    tol = 50 * EPS[real]
    for sites in lattices:
        U, psi = fields(sites, real, batch=2)
        even = all((L // n) % 2 == 0 for L, n in zip(sites, lanes))
        for sign, ap, parity in itertools.product((1, -1), (True, False), (None, 0, 1)):
            if parity is not None and not even:
                continue
            want = wilson_hop.reference(U, psi, sign, ap, parity)
            got = lanes_hop(U, psi, lanes, sign, ap, parity)
            assert_close(got, want, tol)
            assert_close(got, kwil.wilson_hop_cpu(U, psi, sign, ap, parity), tol)
            if parity is not None:    # exactly zero on the other parity
                other = np.indices(sites).sum(axis=0) % 2 != parity
                assert np.all(got[:, other] == 0)
    # links of batch 1 on a batch of fields, and a field of batch 1 under a batch of links
    sites = lattices[0]
    U, psi = fields(sites, real, batch=2)
    assert_close(lanes_hop(U[:1], psi, lanes), wilson_hop.reference(U[:1], psi), tol)
    assert_close(lanes_hop(U, psi[1:], lanes), wilson_hop.reference(U, psi[1:]), tol)


# (lanes, lattice, link rows): a split along one direction with four lanes (a rotation of
# the lanes, not a swap), one along two directions with four lanes in one of them
OTHER_SPLITS = {"float64": (((1, 2, 2, 2), (4, 4, 4, 4), 2), ((1, 1, 1, 4), (2, 2, 4, 8), 3)),
                "float32": (((2, 1, 4, 1), (4, 2, 8, 2), 3), ((2, 1, 4, 1), (4, 2, 8, 2), 2))}


def test_cg_in_the_lanes_layout_equals_the_library_solve():
    """A solver-level layout conversion (WilsonLanes): CG on D^dag D with the source converted
    once and the solution converted back gives the library's solve (WilsonDirac, interleaved
    kernel) in the same number of iterations, and the operator equals WilsonDirac.apply."""
    from lattice_ml.fermions import WilsonDirac, cg
    sites = (4, 4, 4, 4)
    U, b = fields(sites, "float64", batch=2)
    W = WilsonDirac(U, mass=0.3)
    op = ws.WilsonLanes(U, mass=0.3)
    assert op.lanes == CASES["float64"][0]
    assert_close(op.from_lanes(op.apply(op.to_lanes(b))), W.apply(b), 50 * EPS["float64"])
    assert_close(op.from_lanes(op.apply_dagger(op.to_lanes(b))), W.apply_dagger(b),
                 50 * EPS["float64"])
    x_ref, info_ref = cg(W.normal, b, tol=1e-10)
    xl, info = cg(op.normal, op.to_lanes(b), tol=1e-10)
    np.testing.assert_array_equal(np.asarray(info.iterations), np.asarray(info_ref.iterations))
    assert_close(op.from_lanes(xl), x_ref, 1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("real", ["float64", "float32"])
def test_lanes_kernel_two_row_links_and_other_splits(real):
    """Two-row links (third row rebuilt in the lane loop) and other lane splits."""
    tol = 200 * EPS[real]
    for lanes, sites, R in OTHER_SPLITS[real]:
        U, psi = fields(sites, real, batch=2)
        links = np.ascontiguousarray(compress_links(U)) if R == 2 else U
        for sign, ap, parity in ((1, True, None), (-1, False, 0), (1, True, 1), (-1, True, None)):
            want = wilson_hop.reference(U, psi, sign, ap, parity)
            assert_close(lanes_hop(links, psi, lanes, sign, ap, parity), want, tol)


def test_lanes_kernel_is_vectorised():
    """The lane loops compile to packed SIMD arithmetic (x86-64 with AVX2 or AVX-512: packed
    fused multiply-adds on ymm/zmm registers), and no run-time overlap checks are left."""
    import llvmlite.binding as llvm
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("assembly check written for x86-64")
    features = llvm.get_host_cpu_features()
    if not features.get("avx2") or not features.get("fma"):
        pytest.skip("no AVX2/FMA on this CPU")
    lanes, sites = CASES["float64"][0], (4, 4, 4, 4)
    U, psi = fields(sites, "float64")
    lanes_hop(U, psi, lanes)
    loop = ws._cpu_loop(3, lanes)
    asm = loop.inspect_asm(loop.signatures[0])
    packed = [ln for ln in asm.splitlines() if "vfmadd" in ln and "pd" in ln.split()[0]
              and ("ymm" in ln or "zmm" in ln)]
    scalar = [ln for ln in asm.splitlines() if "vfmadd" in ln and "sd" in ln.split()[0]]
    # all eight hops vectorised: at least as many packed FMAs as the scalar remainder has
    assert len(packed) >= 200 and len(packed) >= len(scalar), (len(packed), len(scalar))
    assert "vshufpd" in asm or "vpermpd" in asm or "vpermilpd" in asm or "vpermt2pd" in asm \
        or "vpermi2pd" in asm or "vshuff64x2" in asm or "vperm2f128" in asm   # lane permutes


# ------------------------------------------------------------------------------------------
# CUDA SoA kernel (simulator on the CPU, or a real GPU)
# ------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("real", ["float32", "float64"])
def test_soa_cuda_kernel_equals_reference(real):
    tol = 200 * EPS[real]
    for sites in ((2, 2, 2, 2), (2, 2, 4, 2)):
        U, psi = fields(sites, real)
        Us = _device(so.links_to_soa(U))
        U12s = _device(so.links_to_soa(np.ascontiguousarray(compress_links(U))))
        ps = _device(so.spinor_to_soa(psi))
        for sign, ap, parity, links in ((1, True, None, Us), (-1, False, 0, Us),
                                        (1, True, 1, U12s), (-1, True, None, U12s)):
            got = so.spinor_from_soa(_host(so.wilson_hop_soa(links, ps, sites, sign, ap,
                                                             parity)), sites)
            assert_close(got, wilson_hop.reference(U, psi, sign, ap, parity), tol)
            if parity is not None:
                other = np.indices(sites).sum(axis=0) % 2 != parity
                assert np.all(got[:, other] == 0)


_PTX_SCRIPT = r"""
import types as _t
from numba import cuda, types
import numba.cuda.dispatcher as disp
disp.get_current_device = lambda: _t.SimpleNamespace(compute_capability=(9, 0))
from lattice_ml.kernels import _wilson_soa_cuda
for R, ft in ((3, types.float64), (2, types.float32)):
    a = ft[::1]
    sig = (a, a, a, types.UniTuple(types.int64, 7), types.int64, ft, ft, ft)
    ptx, _ = cuda.compile_ptx(_wilson_soa_cuda.soa_loop(R).py_func, sig, cc=(9, 0))
    # 8 neighbour spinors (24 reals) and 8 links (6 R reals) per site, helpers inlined
    assert ptx.count("ld.global") == 8 * 24 + 8 * 6 * R and "call." not in ptx, R
print("PTX OK")
"""


@pytest.mark.slow
def test_soa_cuda_kernel_compiles_to_ptx_for_sm90(tmp_path):
    """The simulator runs the kernel as Python; this checks that Numba's CUDA target types and
    compiles it for an H100 (sm_90), one load per real read. Subprocess without the
    simulator; skipped without libNVVM."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    res = subprocess.run([sys.executable, "-c", _PTX_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600, cwd=str(tmp_path))
    if res.returncode != 0 and ("NvvmSupportError" in res.stderr or "libNVVM" in res.stderr
                                or "nvvm" in res.stderr.lower() and "cannot" in res.stderr):
        pytest.skip("libNVVM not available: " + res.stderr.strip().splitlines()[-1])
    assert res.returncode == 0 and "PTX OK" in res.stdout, res.stderr[-3000:]
