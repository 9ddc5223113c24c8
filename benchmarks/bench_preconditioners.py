"""Learned and multigrid preconditioners against the existing Wilson solvers, 2D U(1)
(Schwinger-model gauge fields) and 4D SU(3) Wilson-clover, as the mass approaches its critical
value.

    python benchmarks/bench_preconditioners.py [--L 32] [--betas 2 4 6]
        [--deltas 0.1 0.03 0.01 0.003] [--sweeps 300] [--transfer-L 64] [--transfer-beta 4]
        [--skip-ptc]
    python benchmarks/bench_preconditioners.py --theory su3_4d [--L 8] [--betas 6]
        [--csw 1.769] [--deltas ...] [--sweeps 100] [--block 4] [--n-vec 12] [--n-smooth 8]
    ... [--arpack] [--mg NAME:key=value,key=value ...]
    ... --theory su3_4d [--mc M_C] [--existing cgnr_eo bicgstab_eo] [--low-mode]

``--mg`` (repeatable) replaces the default multigrid row by named configurations of
:class:`TwoLevelMultigrid`, e.g. ``--mg mg_mr:block=8x8,n_smooth=8
--mg mg_sap:block=8x8,smoother=sap,sap_solver=exact`` (``AxB`` a tuple; every other key a
keyword of ``TwoLevelMultigrid``; ``n_vec`` defaults to 8 in 2D, ``--n-vec`` in 4D; the coarse
solve is direct up to a coarse dimension of 2048, GMRES beyond). Each configuration is set up
at every mass, its setup CPU time recorded apart, with ``break_even_rhs``: the number of
right-hand sides on one configuration from which setup plus solves beat the best existing
solver (``ceil(setup / (t_best - t_mg))``, CPU seconds). ``--arpack``: the 2D ``m_c`` from six
ARPACK eigenvalues of smallest real part as in 4D, not the dense spectrum (for 64^2 and
beyond). Run with ``OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1`` and compare CPU seconds.
``single=1`` in a ``--mg`` configuration builds that multigrid on the complex64 copy of the
operator and casts in and out (:class:`SinglePrecision`; the outer FGMRES stays complex128).
``--mc-search M0``: ``m_c`` from the Rayleigh quotient of the lowest mode at ``M0`` and again
near the estimate (:func:`critical_mass_search`; 12^4 and beyond, where ARPACK does not fit);
``--mc``: the configuration's ``m_c`` from an earlier record (no ARPACK; the heatbath is seeded,
so the configuration is the same); ``--existing``: which existing solvers run (the best of them
is the reference); ``--low-mode``: the lowest mode of D (``D^-2 v`` by even/odd BiCGStab) and
every multigrid's defect ``|(1 - P R) v|`` (``low_mode_defect``).

``--learned`` (2D U(1), the first of ``--betas``): the learned layers of
:mod:`lattice_ml.fermions.pooling` against the near-null multigrid (blocks 4x4,
``--learned-n-vec`` vectors chirally split, 4 MR steps, direct coarse solve), per mass: (a) that
multigrid; (b) gauge-equivariant pooling with ``2 * n_vec`` channels trained (``--learned-steps``
Adam steps) on ``--learned-pool-vectors`` near-null vectors, started from the near-null basis
(``mg_pool_nearnull``) or from random weights (``mg_pool_random``); (c) a coarse stencil network
(``--learned-coarse-layers``) trained on ``|M~ D~ v - v|^2`` in place of the direct coarse solve
(``mg_*_learned_coarse``), and as the preconditioner of a coarse FGMRES to 0.05
(``mg_*_coarse_gmres_learned``, against ``mg_*_coarse_gmres`` without it); training CPU seconds
apart. Transfer: the layers trained on config 0 at the lightest mass reused on config 1 at its
``m_c + delta`` (``transferred``), against layers trained there (``*_trained_here``).

``--theory su3_4d``: quenched SU(3) configurations (heatbath + 2 over-relaxation sweeps from the
unit field, ``--sweeps``), the clover operator with ``--csw`` (default 1.769, the
non-perturbative value at beta = 6, Luescher et al. 1997). ``m_c = -min Re lambda`` over the
eigenvalues of ``D(m = 0)`` of smallest real part (ARPACK, ``scipy.sparse.linalg.eigs``,
``which="SR"``, six eigenvalues to 1e-8): on a small quenched volume these are complex pairs, so
``D(m_c + delta)`` has the eigenvalues ``delta +- i Im lambda`` and ``|Im lambda|`` bounds the
condition number (recorded as ``im_lambda``). Same solvers as in 2D, without the PTC network;
multigrid with blocks ``--block``^4, ``--n-vec`` near-null vectors (chirally split), ``--n-smooth`` MR post-smoothing steps
(default 8) and a direct
coarse solve when the coarse dimension is at most 2048, GMRES on the coarse stencil otherwise.

Configurations: heatbath + 2 over-relaxation sweeps from the unit field (``--sweeps``, seeded),
two per beta (config 0 for the scan, config 1 for transfer). Critical mass per configuration:
``m_c = -min Re lambda`` over the **real** eigenvalues of ``D_W(m = 0)`` (dense
``numpy.linalg.eig``, so ``D_W(m_c + delta)`` has the eigenvalue ``delta``). Masses
``m = m_c + delta``.

Every solver solves ``D psi = eta`` (one Gaussian source, seed 7) to a **true full-system**
relative residual below 1e-10 (for the even/odd solvers the Schur tolerance is scaled by
``|eta| / |prepared source|``, and the reconstructed solution is checked):

* ``cgnr_eo``: CG on the normal equations of the even/odd Schur operator (``cgne``, ``cgnr``);
* ``bicgstab_eo``, ``bicgstab``: BiCGStab on the Schur operator and on D;
* ``fgmres_ptc``: FGMRES(30) with a 1 -> 2 -> 1, 1-hop PTC network trained once per configuration
  (200 Adam steps, batch 4, lr 0.02, at ``delta = 0.1``) and reused at every mass;
* ``fgmres_mg``: FGMRES(30) with the two-level multigrid (blocks 4x4, 8 near-null vectors from
  3 inverse iterations of 20 BiCGStab steps, chiral split: 16 coarse dof per block, direct coarse
  solve, 4 MR post-smoothing steps), set up at each mass (setup time reported apart).

``matvecs`` counts applications of D (or of the Schur operator, which costs about one D) by the
solver, not by the preconditioner. Transfer: the PTC network trained on config 0 is used on
config 1 of the same ensemble and on a ``--transfer-L`` lattice at the same beta, against no
network and a network retrained there; the retraining cost is the Adam steps from the transferred
weights until the cost is within 5% of the fully trained network's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy  # noqa: E402
from lattice_ml.fermions import WilsonDirac  # noqa: E402
from lattice_ml.fermions.multigrid import TwoLevelMultigrid, near_null_vectors  # noqa: E402
from lattice_ml.fermions.pooling import (CoarseStencilNetwork, GaugePooling,  # noqa: E402
                                         coarse_correction_cost, train_coarse_correction,
                                         train_pooling)
from lattice_ml.fermions.ptc import (PTCNetwork, ParallelTransport,  # noqa: E402
                                     preconditioner_cost, train_preconditioner)
from lattice_ml.fermions.solvers import SolverError, bicgstab, cgne, fgmres, norm2  # noqa: E402
from lattice_ml.gauge.observables import average_plaquette  # noqa: E402
from lattice_ml.groups import identity  # noqa: E402
from lattice_ml.samplers.heatbath import Heatbath  # noqa: E402

TOL = 1e-10
xp = namespace_by_name("numpy")
_LOAD0 = list(os.getloadavg())


def thermalise(beta, L, sweeps, seed):
    rng = RandomStreams(seed=seed, n_chains=2, xp=xp)
    U = identity(1, (2, 2, L, L), xp, dtype=xp.complex128)
    hb = Heatbath(beta, 1, n_or=2)
    for _ in range(sweeps):
        U, _ = hb.step(U, rng)
    return U


def plaquette(U):
    u = to_numpy(U)[..., 0, 0]
    p = u[:, 0] * np.roll(u[:, 1], -1, axis=1) * np.conj(np.roll(u[:, 0], -1, axis=2)) \
        * np.conj(u[:, 1])
    return p.real.mean(axis=(1, 2))


def critical_mass(U1):
    """-min Re over the real eigenvalues of D(m = 0), dense."""
    W = WilsonDirac(U1, mass=0.0)
    L = U1.shape[2:4]
    n = L[0] * L[1] * 2
    e = np.eye(n, dtype=complex)
    cols = []
    for j0 in range(0, n, 256):
        blk = xp.asarray(e[j0:j0 + 256].reshape((-1,) + tuple(L) + (2, 1)))
        cols.append(to_numpy(W.apply(blk)).reshape(-1, n))
    Dm = np.concatenate(cols).T
    lam = np.linalg.eigvals(Dm)
    real = lam[np.abs(lam.imag) < 1e-8]
    if real.size == 0:        # no real eigenvalue (charge 0 on a small lattice): the lowest pair
        real = lam
    return float(-real.real.min()), float(np.abs(lam).min())


def rel_res(W, x, b):
    return float(np.sqrt(to_numpy(norm2(b - W.apply(x))[0]) / to_numpy(norm2(b))[0]))


_CPU = {}


def timed(fn):
    """``(fn(), wall seconds)``; the process CPU seconds of the call are kept in ``_CPU["last"]``
    (single-threaded runs on a shared machine: CPU time is the robust measure)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    _CPU["last"] = time.process_time() - c0
    return out, time.perf_counter() - t0


def thermalise_su3(beta, L, sweeps, seed):
    rng = RandomStreams(seed=seed, n_chains=1, xp=xp)
    U = identity(3, (1, 4, L, L, L, L), xp, dtype=xp.complex128)
    hb = Heatbath(beta, 3, n_or=2)
    for _ in range(sweeps):
        U, _ = hb.step(U, rng)
    return U


def critical_mass_arpack(W0, k=6, tol=1e-8):
    """``(m_c, |Im lambda|, eigenvalues, matvecs)`` from the ``k`` eigenvalues of ``D(m = 0)``
    of smallest real part (ARPACK); ``m_c = -Re lambda`` of the lowest one."""
    from scipy.sparse.linalg import LinearOperator, eigs

    shp = (1,) + tuple(W0.sites) + (W0.n_spin, W0.N)
    n = int(np.prod(shp))
    count = [0]

    def matvec(v):
        count[0] += 1
        return to_numpy(W0.apply(xp.asarray(np.ascontiguousarray(v).reshape(shp)))).ravel()

    op = LinearOperator((n, n), matvec=matvec, dtype=np.complex128)
    # a fixed start vector: ARPACK's default is random, and m_c (so every mass) would differ
    # in the last digits from run to run
    v0 = np.random.default_rng(31).standard_normal(n) + 0j
    lam = eigs(op, k=k, which="SR", tol=tol, ncv=max(40, 4 * k), v0=v0,
               return_eigenvectors=False)
    low = lam[np.argmin(lam.real)]
    return float(-low.real), float(abs(low.imag)), lam, count[0]


def parse_mg(spec):
    """``"name:key=value,..."`` -> ``(name, kwargs)`` (``AxB`` tuples, ints, floats, strings)."""
    name, _, rest = spec.partition(":")
    kw = {}
    for item in filter(None, rest.split(",")):
        key, _, val = item.partition("=")
        if "x" in val and all(p.isdigit() for p in val.split("x")):
            kw[key] = tuple(int(p) for p in val.split("x"))
        else:
            for conv in (int, float, str):
                try:
                    kw[key] = conv(val)
                    break
                except ValueError:
                    pass
    return name, kw


class SinglePrecision:
    """A multigrid built on the complex64 copy of ``W`` (links cast), applied to complex128
    fields by casting in and out: the mixed-precision preconditioner of DD-alphaAMG (the outer
    FGMRES and its residuals stay in double precision)."""

    def __init__(self, W, block, **kw):
        W32 = WilsonDirac(xp.astype(W.U, xp.complex64), mass=W.mass, boundary=W.boundary,
                          csw=W.csw)
        self.mg = TwoLevelMultigrid(W32, block, **kw)
        self.smoother, self.coarse_iterations = self.mg.smoother, 0

    def defect(self, v):
        return self.mg.defect(xp.astype(v, xp.complex64))

    def __call__(self, v):
        return xp.astype(self.mg(xp.astype(v, xp.complex64)), v.dtype)


def run_multigrid(W, eta, name, kw, low=None):
    """Set up ``TwoLevelMultigrid(W, **kw)`` (``single=1``: in complex64,
    :class:`SinglePrecision`) and solve with FGMRES(30): one row; with ``low`` (a low mode of
    D) its defect ``|(1 - P R) low|``."""
    kw = dict(kw)
    block = tuple(kw.pop("block"))
    single = bool(kw.pop("single", 0))
    n_coarse = int(np.prod([L // b for L, b in zip(W.sites, block)])) * 2 * kw.get("n_vec", 8)
    kw.setdefault("coarse_solver", "direct" if n_coarse <= 2048 else "gmres")
    mg, t_setup = timed(lambda: (SinglePrecision if single else TwoLevelMultigrid)(
        W, block, **kw))
    cpu_setup = _CPU["last"]
    (x, info), dt = timed(lambda: fgmres(W.apply, eta, M=mg, restart=30, tol=TOL,
                                         maxiter=100000))
    row = dict(solver=name, iterations=int(info.iterations[0]), matvecs=int(info.matvecs),
               seconds=dt, setup_seconds=t_setup, cpu_seconds=_CPU["last"],
               cpu_setup_seconds=cpu_setup, residual=rel_res(W, x, eta), block=list(block),
               coarse_iterations=int(mg.coarse_iterations),
               smoother_applications=getattr(mg.smoother, "applications", None),
               single=single, low_mode_defect=(None if low is None else
                                              float(mg.defect(low)[0])),
               **{k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()})
    return row


def run_solvers(W, eta, net, rows, tag, block=(4, 4), n_vec=8, coarse_solver="direct",
                n_smooth=4, mg_configs=None, existing=("cgnr_eo", "bicgstab_eo", "bicgstab"),
                low_mode=False):
    failed = {}
    prep = W.prepare_source(eta)
    tol_eo = TOL * float(np.sqrt(to_numpy(norm2(eta))[0] / to_numpy(norm2(prep))[0])) * 0.999

    def eo(solver):
        def f():
            if solver == "cgnr":
                y, info = cgne(W.apply_eo, W.apply_eo_dagger, prep, tol=tol_eo, maxiter=100000)
            else:
                y, info = bicgstab(W.apply_eo, prep, tol=tol_eo, maxiter=100000)
            return W.reconstruct(y, eta), info
        return f

    cases = {"cgnr_eo": eo("cgnr"), "bicgstab_eo": eo("bicgstab"),
             "bicgstab": lambda: bicgstab(W.apply, eta, tol=TOL, maxiter=100000)}
    cases = {k: v for k, v in cases.items() if k in existing}
    if net is not None:
        M = net.operator(W.U)
        cases["fgmres_ptc"] = lambda: fgmres(W.apply, eta, M=M, restart=30, tol=TOL,
                                             maxiter=100000)
    out = {}
    for name, fn in cases.items():
        try:
            (x, info), dt = timed(fn)
        except SolverError as err:      # recorded, not hidden: the row says how it failed
            print(f"  {name}: {err}", flush=True)
            failed[name] = dict(tag, solver=name, failed=str(err), iterations=err.iteration)
            continue
        out[name] = dict(tag, solver=name, iterations=int(info.iterations[0]),
                         matvecs=int(info.matvecs), seconds=dt, cpu_seconds=_CPU["last"],
                         residual=rel_res(W, x, eta))
    low = None
    if low_mode:                   # D^-2 v by even/odd BiCGStab: the lowest mode(s) of D
        low, low_info = lowest_mode(W, eta)
        tag = dict(tag, **low_info)
        for r in out.values():
            r.update(low_info)
    if not mg_configs:
        mg_configs = [("fgmres_mg", dict(block=block, n_vec=n_vec, n_smooth=n_smooth,
                                         coarse_solver=coarse_solver))]
    for name, kw in mg_configs:
        kw = dict(kw)
        kw.setdefault("n_vec", n_vec)
        out[name] = dict(tag, **run_multigrid(W, eta, name, kw, low))
        print(f"  {name}: {out[name]['iterations']} it, {out[name]['cpu_seconds']:.2f} CPU s, "
              f"setup {out[name]['cpu_setup_seconds']:.2f} CPU s", flush=True)
    existing = [k for k in ("cgnr_eo", "bicgstab_eo", "bicgstab") if k in out]
    best = min(existing, key=lambda k: out[k]["seconds"])
    for r in out.values():
        r["best_existing"] = best
        r["speedup_vs_best"] = out[best]["seconds"] / r["seconds"]
        if "setup_seconds" in r:
            r["speedup_vs_best_with_setup"] = out[best]["seconds"] / (r["seconds"]
                                                                       + r["setup_seconds"])
    # the same ratios in CPU seconds (best existing solver chosen by CPU time)
    best_cpu = min(existing, key=lambda k: out[k]["cpu_seconds"])
    for r in out.values():
        r["best_existing_cpu"] = best_cpu
        r["cpu_speedup_vs_best"] = out[best_cpu]["cpu_seconds"] / r["cpu_seconds"]
        if "cpu_setup_seconds" in r:
            r["cpu_speedup_vs_best_with_setup"] = out[best_cpu]["cpu_seconds"] / (
                r["cpu_seconds"] + r["cpu_setup_seconds"])
            gain = out[best_cpu]["cpu_seconds"] - r["cpu_seconds"]
            r["break_even_rhs"] = (int(np.ceil(r["cpu_setup_seconds"] / gain)) if gain > 0
                                   else None)
    rows.extend(out.values())
    rows.extend(failed.values())
    return out


def lowest_mode(W, eta, n_iter=2):
    """``v = D^-n v0`` (``v0`` a fixed Gaussian field, even/odd BiCGStab to 1e-10), normalised:
    at ``m`` near ``m_c`` the lowest mode of D (the ratio of the two smallest |lambda| per
    step); with ``|D v|``, the Rayleigh quotient ``<v, D v>`` recorded."""
    v = RandomStreams(seed=13, n_chains=1, xp=xp).complex_normal(tuple(eta.shape[1:]))
    for _ in range(n_iter):
        v = v / xp.sqrt(xp.astype(norm2(v), v.dtype))[0]
        prep = W.prepare_source(v)
        y, _ = bicgstab(W.apply_eo, prep, tol=TOL, maxiter=100000)
        v = W.reconstruct(y, v)
    v = v / xp.sqrt(xp.astype(norm2(v), v.dtype))[0]
    Dv = W.apply(v)
    rq = complex(to_numpy(xp.sum(xp.conj(v) * Dv)))
    return v, dict(low_mode_residual=float(np.sqrt(to_numpy(norm2(Dv))[0])),
                   low_mode_rayleigh=[rq.real, rq.imag])


def critical_mass_search(U0, csw, m0, steps=(3, 2, 2), offsets=(0.003, 0.0005)):
    """``m_c`` without ARPACK (for volumes where its ~1e4 matvecs do not fit): at ``m0`` the
    lowest mode of ``D(m0)`` (:func:`lowest_mode`, ``steps[0]`` inverse iterations) and its
    Rayleigh quotient ``rho``, ``m_c = m0 - Re rho``; again at ``m_c + offsets[k]``
    (``steps[k + 1]`` iterations, the next mode's ratio now ``~offset / |lambda_2|``). ``m_c``
    is ``-Re lambda`` of the mode of smallest ``|lambda|`` (on the 8^4 configuration the
    lowest-real-part one of ARPACK, real: two steps from ``m0 = -0.28`` gave -0.303590 against
    ARPACK's -0.303569); the record has every ``rho``."""
    eta = RandomStreams(seed=7, n_chains=1, xp=xp).complex_normal(tuple(U0.shape[2:6]) + (4, 3))
    out, m = [], m0
    for k, n in enumerate(steps):
        _, info = lowest_mode(WilsonDirac(U0, mass=m, csw=csw), eta, n_iter=n)
        out.append(dict(mass=m, **info))
        mc = m - info["low_mode_rayleigh"][0]
        m = mc + (offsets[k] if k < len(offsets) else 0.0)
    return mc, out


def trained_net(U1, mass, steps=200, seed=0):
    W = WilsonDirac(U1, mass=mass)
    net = PTCNetwork.build(2, [1, 2, 1], hops=1, xp=xp, identity=1.0 / (mass + 2.0))
    rec = train_preconditioner(net, U1, W.apply, steps=steps, batch=4, lr=0.02, seed=seed)
    return net, rec


def eval_cost(net, U1, W, seed=99):
    v = RandomStreams(seed=seed, n_chains=8, xp=xp).complex_normal(tuple(U1.shape[2:4]) + (2, 1))
    return preconditioner_cost(net, ParallelTransport(U1), W.apply, v, need_grad=False)[0]


def fgmres_iters(W, eta, net):
    M = None if net is None else net.operator(W.U)
    (x, info), dt = timed(lambda: fgmres(W.apply, eta, M=M, restart=30, tol=TOL,
                                         maxiter=100000))
    return int(info.iterations[0]), dt


def main_su3_4d(args):
    rows, configs = [], []
    L = args.L
    for beta in args.betas:
        (U0), t_hb = timed(lambda: thermalise_su3(beta, L, args.sweeps, seed=int(10 * beta)))
        plaq = float(to_numpy(average_plaquette(U0))[0])
        if args.mc_search is not None:   # m_c from the lowest mode's Rayleigh quotient
            (mc, search), t_mc = timed(lambda: critical_mass_search(U0, args.csw,
                                                                    args.mc_search))
            configs.append(dict(beta=beta, L=L, csw=args.csw, plaquette=plaq, m_c=mc,
                                m_c_search=search, m_c_cpu_seconds=_CPU["last"],
                                heatbath_seconds=t_hb))
            print(f"beta {beta}: plaquette {plaq:.5f}, m_c = {mc:.5f} (search {search})",
                  flush=True)
        elif args.mc is not None:        # m_c of this configuration from an earlier record
            mc = args.mc
            configs.append(dict(beta=beta, L=L, csw=args.csw, plaquette=plaq, m_c=mc,
                                m_c_given=True, heatbath_seconds=t_hb))
            print(f"beta {beta}: plaquette {plaq:.5f}, m_c = {mc:.5f} (given)", flush=True)
        else:
            (mc, im, lam, nmv), t_eig = timed(
                lambda: critical_mass_arpack(WilsonDirac(U0, mass=0.0, csw=args.csw)))
            configs.append(dict(beta=beta, L=L, csw=args.csw, plaquette=plaq, m_c=mc,
                                im_lambda=im, eigenvalues=[[float(z.real), float(z.imag)]
                                                           for z in lam],
                                arpack_matvecs=nmv, arpack_seconds=t_eig,
                                heatbath_seconds=t_hb))
            print(f"beta {beta}: plaquette {plaq:.5f}, m_c = {mc:.5f}, |Im lambda| = "
                  f"{im:.4f} ({nmv} matvecs, {t_eig:.0f} s)", flush=True)
        eta = RandomStreams(seed=7, n_chains=1, xp=xp).complex_normal((L,) * 4 + (4, 3))
        block = (args.block,) * 4
        n_coarse = (L // args.block) ** 4 * 2 * args.n_vec
        coarse = "direct" if n_coarse <= 2048 else "gmres"
        for d in args.deltas:
            W = WilsonDirac(U0, mass=mc + d, csw=args.csw)
            out = run_solvers(W, eta, None, rows, dict(beta=beta, L=L, csw=args.csw, delta=d,
                                                       mass=mc + d),
                              block=block, n_vec=args.n_vec, coarse_solver=coarse,
                              n_smooth=args.n_smooth, mg_configs=args.mg_configs,
                              existing=args.existing, low_mode=args.low_mode)
            harness.print_table(list(out.values()), COLUMNS_CPU)
    path = harness.record("preconditioners-su3-4d", rows, "numpy", {"configs": configs,
                                                                    "tol": TOL, **threads()})
    print(path)


COLUMNS_CPU = ["delta", "solver", "iterations", "matvecs", "cpu_seconds", "cpu_setup_seconds",
               "residual", "cpu_speedup_vs_best", "break_even_rhs", "low_mode_defect"]


def threads():
    """The thread settings and the load average (the machine is shared)."""
    return {"env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                                                   "OMP_NUM_THREADS")},
            "loadavg_start": _LOAD0, "loadavg_end": list(os.getloadavg())}


def main_learned(args):
    """``--learned``: 2D U(1), one beta (``--betas``, first), config 0 for the scan and config 1
    for transfer; per mass ``m_c + delta``: the existing solvers, (a) the near-null multigrid,
    (b) learned pooling R/P, (c) a learned coarse correction in place of the direct coarse
    solve (on (a) and on (b)); training CPU seconds recorded apart."""
    rows, configs = [], []
    beta = args.betas[0]
    L = args.L
    U = thermalise(beta, L, args.sweeps, seed=int(10 * beta))
    U0, U1 = U[0:1, ...], U[1:2, ...]
    plaq = plaquette(U)
    mcs = [critical_mass(Uc)[0] for Uc in (U0, U1)]
    configs.append(dict(beta=beta, L=L, plaquette=plaq.tolist(), m_c=mcs[0], m_c_config1=mcs[1]))
    print(f"beta {beta}: plaquette {plaq}, m_c = {mcs}", flush=True)
    block, nv, nsm = (4, 4), args.learned_n_vec, 4
    n_pool = args.learned_pool_vectors
    eta = RandomStreams(seed=7, n_chains=1, xp=xp).complex_normal((L, L, 2, 1))
    steps_p, steps_c = args.learned_steps

    def solve(W, M):
        """FGMRES(30) to 1e-10, at most ``--learned-maxiter`` steps (a failure is a row)."""
        c0 = time.process_time()
        try:
            (x, info), dt = timed(lambda: fgmres(W.apply, eta, M=M, restart=30, tol=TOL,
                                                 maxiter=args.learned_maxiter))
        except SolverError as err:        # recorded: the row says how it failed
            return dict(iterations=err.iteration, failed=str(err),
                        cpu_seconds=time.process_time() - c0)
        return dict(iterations=int(info.iterations[0]), seconds=dt, cpu_seconds=_CPU["last"],
                    residual=rel_res(W, x, eta))

    def learned_rows(W, Uc, tag, trained=None, plain_coarse_gmres=True):
        """(a), (b), (c) on one operator; ``trained``: (pool weights, coarse nets) to reuse
        (transfer) instead of training."""
        out = {}
        mg_a, _ = timed(lambda: TwoLevelMultigrid(W, block, n_vec=nv, n_smooth=nsm))
        setup_a = _CPU["last"]
        out["mg_nearnull"] = dict(tag, solver="mg_nearnull", cpu_setup_seconds=setup_a,
                                  defect_pool_vectors=None, **solve(W, mg_a))
        # the pool of near-null vectors the pooling is trained on (and the basis of (a))
        vecs, _ = timed(lambda: near_null_vectors(W, n_pool, 3, 20))
        t_vec = _CPU["last"]
        res = {}
        for init in ("nearnull", "random"):
            pool = GaugePooling(Uc, block, 2 * nv)
            if trained is not None:
                pool.set_weights(trained["pool_" + init])
                pool.orthonormalise()
                rec_s, c0, c1 = 0.0, None, pool.cost(vecs, need_grad=False)[0]
            else:
                if init == "nearnull":
                    pool.init_from_vectors(vecs[:nv])
                else:
                    pool.init_random(seed=5)
                c0 = pool.cost(vecs, need_grad=False)[0]
                lr = args.learned_lr if init == "random" else args.learned_lr_finetune
                rec, _ = timed(lambda: train_pooling(pool, vecs, steps=steps_p, lr=lr))
                rec_s, c1 = _CPU["last"], rec.extra["final_cost"]
            mg_b, _ = timed(lambda: TwoLevelMultigrid(W, block, n_smooth=nsm, transfer=pool))
            name = f"mg_pool_{init}"
            out[name] = dict(tag, solver=name, cpu_setup_seconds=t_vec + _CPU["last"],
                             cpu_train_seconds=rec_s, pool_cost=[c0, c1],
                             **solve(W, mg_b))
            res[name] = (pool, mg_b)
        # nearnull basis cost on the same vector pool, for comparison
        pool_nn = GaugePooling(Uc, block, 2 * nv)
        pool_nn.init_from_vectors(vecs[:nv])
        out["mg_pool_nearnull"]["pool_cost_nearnull_basis"] = pool_nn.cost(vecs, False)[0]
        nets = {}
        for base, mg in (("nearnull", mg_a), ("pool", res["mg_pool_nearnull"][1])):
            Dc = mg.coarse_op.apply
            vtest = RandomStreams(seed=21, n_chains=8, xp=xp).complex_normal(
                mg.blocking.coarse + (mg.n_c,))
            if trained is not None:
                net = CoarseStencilNetwork(trained["coarse_" + base])
                t_c = 0.0
            else:
                net = CoarseStencilNetwork.from_coarse_operator(
                    mg.coarse_op, n_layers=args.learned_coarse_layers)
                _, _ = timed(lambda: train_coarse_correction(net, Dc, steps=steps_c, batch=8,
                                                             lr=args.learned_lr_coarse))
                t_c = _CPU["last"]
            cc = coarse_correction_cost(net, Dc, vtest, need_grad=False)[0]
            nets[base] = net
            direct = mg.coarse_solver
            mg.set_coarse_solver(net)
            name = f"mg_{base}_learned_coarse"
            out[name] = dict(tag, solver=name, cpu_train_seconds=t_c, coarse_cost=cc,
                             **solve(W, mg))
            # the coarse system solved by FGMRES to coarse_tol, without and with the network
            # as its preconditioner
            pres = [(f"mg_{base}_coarse_gmres", None)] if plain_coarse_gmres else []
            for pname, pre in pres + [(f"mg_{base}_coarse_gmres_learned", net)]:
                mg.set_coarse_solver("gmres", precond=pre)
                mg.coarse_iterations = 0
                out[pname] = dict(tag, solver=pname, **solve(W, mg))
                out[pname]["coarse_iterations"] = mg.coarse_iterations
            mg.set_coarse_solver(direct)
        trained_out = dict(pool_nearnull=res["mg_pool_nearnull"][0].weights,
                           pool_random=res["mg_pool_random"][0].weights,
                           coarse_nearnull=nets["nearnull"].weights,
                           coarse_pool=nets["pool"].weights)
        return out, trained_out

    trained_last = None
    for d in args.deltas:
        W = WilsonDirac(U0, mass=mcs[0] + d)
        tag = dict(beta=beta, L=L, delta=d, mass=mcs[0] + d, config=0)
        out = run_solvers(W, eta, None, [], tag, mg_configs=[("mg_default", dict(
            block=block, n_vec=nv, n_smooth=nsm, coarse_solver="direct"))],
            existing=("cgnr_eo", "bicgstab_eo"))
        lr_, trained_last = learned_rows(W, U0, tag)
        out.update(lr_)
        _ratios(out)
        rows.extend(out.values())
        harness.print_table(list(out.values()), LEARNED_COLUMNS)
    # transfer: the layers trained on config 0 at the lightest mass, reused on config 1
    d = args.deltas[-1]
    W1 = WilsonDirac(U1, mass=mcs[1] + d)
    tag = dict(beta=beta, L=L, delta=d, mass=mcs[1] + d, config=1, transferred=True)
    out = run_solvers(W1, eta, None, [], tag, mg_configs=[("mg_default", dict(
        block=block, n_vec=nv, n_smooth=nsm, coarse_solver="direct"))],
        existing=("cgnr_eo", "bicgstab_eo"))
    tr, _ = learned_rows(W1, U1, tag, trained=trained_last)
    out.update(tr)
    tag2 = dict(tag, transferred=False)
    fresh, _ = learned_rows(W1, U1, tag2, plain_coarse_gmres=False)
    out.update({k + "_trained_here": dict(v, solver=k + "_trained_here")
                for k, v in fresh.items() if k != "mg_nearnull"})
    _ratios(out)
    rows.extend(out.values())
    harness.print_table(list(out.values()), LEARNED_COLUMNS)
    path = harness.record("preconditioners-learned-u1", rows, "numpy",
                          {"configs": configs, "tol": TOL, "block": list(block), "n_vec": nv,
                           "pool_vectors": n_pool, "train_steps": [steps_p, steps_c],
                           "coarse_layers": args.learned_coarse_layers,
                           "lr": args.learned_lr, "lr_finetune": args.learned_lr_finetune,
                           "lr_coarse": args.learned_lr_coarse,
                           **threads()})
    print(path)


LEARNED_COLUMNS = ["delta", "config", "solver", "iterations", "cpu_seconds", "cpu_setup_seconds",
                   "cpu_train_seconds", "pool_cost", "coarse_cost", "coarse_iterations",
                   "cpu_speedup_vs_best", "cpu_speedup_vs_mg"]


def _ratios(out):
    """CPU-time ratios against the best existing solver and the near-null multigrid."""
    existing = [k for k in ("cgnr_eo", "bicgstab_eo", "bicgstab") if k in out]
    best = min(existing, key=lambda k: out[k]["cpu_seconds"])
    for r in out.values():
        r["best_existing_cpu"] = best
        r["cpu_speedup_vs_best"] = out[best]["cpu_seconds"] / r["cpu_seconds"]
        r["cpu_speedup_vs_mg"] = out["mg_nearnull"]["cpu_seconds"] / r["cpu_seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--theory", choices=["u1_2d", "su3_4d"], default="u1_2d")
    ap.add_argument("--L", type=int)
    ap.add_argument("--betas", type=float, nargs="+")
    ap.add_argument("--deltas", type=float, nargs="+", default=[0.1, 0.03, 0.01, 0.003])
    ap.add_argument("--sweeps", type=int)
    ap.add_argument("--csw", type=float, default=1.769, help="su3_4d: clover coefficient")
    ap.add_argument("--block", type=int, default=4, help="su3_4d: block extent")
    ap.add_argument("--n-vec", type=int, default=12, help="su3_4d: near-null vectors")
    ap.add_argument("--n-smooth", type=int, default=8, help="su3_4d: MR smoothing steps")
    ap.add_argument("--transfer-L", type=int, default=64)
    ap.add_argument("--transfer-beta", type=float, default=4.0)
    ap.add_argument("--skip-ptc", action="store_true",
                    help="no FGMRES + PTC rows (it stagnates at very light masses)")
    ap.add_argument("--arpack", action="store_true",
                    help="u1_2d: m_c from six ARPACK eigenvalues (not the dense spectrum)")
    ap.add_argument("--mc", type=float, default=None,
                    help="su3_4d: m_c of the configuration (from an earlier record; no ARPACK)")
    ap.add_argument("--mc-search", type=float, default=None, metavar="M0",
                    help="su3_4d: m_c from the lowest mode's Rayleigh quotient, starting at the "
                         "mass M0 (no ARPACK; larger volumes)")
    ap.add_argument("--existing", nargs="+", default=["cgnr_eo", "bicgstab_eo", "bicgstab"],
                    choices=["cgnr_eo", "bicgstab_eo", "bicgstab"],
                    help="the existing solvers to run (the best of them is the reference)")
    ap.add_argument("--low-mode", action="store_true",
                    help="the lowest mode of D (D^-2 v, even/odd BiCGStab) and each "
                         "multigrid's defect |(1 - P R) v|")
    ap.add_argument("--mg", action="append", default=[], metavar="NAME:key=value,...",
                    help="a multigrid configuration (repeatable; replaces the default row)")
    ap.add_argument("--learned", action="store_true",
                    help="u1_2d: learned pooling R/P and a learned coarse correction against "
                         "the near-null multigrid (first of --betas; transfer to config 1)")
    ap.add_argument("--learned-n-vec", type=int, default=8,
                    help="--learned: near-null vectors of (a), channels per chirality of (b)")
    ap.add_argument("--learned-pool-vectors", type=int, default=16,
                    help="--learned: near-null vectors the pooling is trained on")
    ap.add_argument("--learned-steps", type=int, nargs=2, default=[200, 200],
                    metavar=("POOL", "COARSE"), help="--learned: Adam steps")
    ap.add_argument("--learned-coarse-layers", type=int, default=2,
                    help="--learned: coarse stencil layers of the learned coarse correction")
    ap.add_argument("--learned-maxiter", type=int, default=10000,
                    help="--learned: FGMRES step limit (a row that fails is recorded)")
    ap.add_argument("--learned-lr", type=float, default=0.02,
                    help="--learned: Adam learning rate of the pooling from random weights")
    ap.add_argument("--learned-lr-coarse", type=float, default=0.003,
                    help="--learned: Adam learning rate of the coarse network")
    ap.add_argument("--learned-lr-finetune", type=float, default=0.002,
                    help="--learned: Adam learning rate of the pooling started from the "
                         "near-null basis")
    args = ap.parse_args()
    args.mg_configs = [parse_mg(m) for m in args.mg]
    four = args.theory == "su3_4d"
    args.L = args.L or (8 if four else 32)
    args.betas = args.betas or ([6.0] if four else [2.0, 4.0, 6.0])
    args.sweeps = args.sweeps or (100 if four else 300)
    if four:
        return main_su3_4d(args)
    if args.learned:
        return main_learned(args)
    rows, configs, transfer = [], [], []
    for beta in args.betas:
        U = thermalise(beta, args.L, args.sweeps, seed=int(10 * beta))
        U0 = U[0:1, ...]
        plaq = plaquette(U)
        if args.arpack:
            (mc, im, lam, nmv), t_eig = timed(lambda: critical_mass_arpack(
                WilsonDirac(U0, mass=0.0)))
            configs.append(dict(beta=beta, L=args.L, plaquette=plaq.tolist(), m_c=mc,
                                im_lambda=im, eigenvalues=[[float(z.real), float(z.imag)]
                                                           for z in lam],
                                arpack_matvecs=nmv, arpack_cpu_seconds=_CPU["last"]))
        else:
            mc, lam_min = critical_mass(U0)
            configs.append(dict(beta=beta, L=args.L, plaquette=plaq.tolist(), m_c=mc))
        print(f"beta {beta}: plaquette {plaq}, m_c = {mc:.5f}", flush=True)
        net = None
        if not (args.skip_ptc and beta != args.transfer_beta):
            net, rec = trained_net(U0, mc + 0.1)
            configs[-1].update(ptc_train_seconds=rec.seconds, ptc_cost=[float(rec.cost[0]),
                                                                        float(rec.cost[-1])])
        eta = RandomStreams(seed=7, n_chains=1, xp=xp).complex_normal((args.L, args.L, 2, 1))
        for d in args.deltas:
            W = WilsonDirac(U0, mass=mc + d)
            out = run_solvers(W, eta, None if args.skip_ptc else net, rows,
                              dict(beta=beta, L=args.L, delta=d, mass=mc + d),
                              mg_configs=args.mg_configs)
            harness.print_table(list(out.values()), ["beta"] + COLUMNS_CPU)
        if beta == args.transfer_beta:
            transfer = run_transfer(U, net, mc, args)
    if transfer:
        harness.print_table(transfer, ["target", "network", "iterations", "seconds",
                                       "cost", "retrain_steps"])
    path = harness.record("preconditioners-u1", rows, "numpy",
                          {"configs": configs, "transfer": transfer, "tol": TOL, **threads()})
    print(path)


def run_transfer(U, net, mc, args):
    """net (trained on config 0) on config 1 and on a larger lattice."""
    out = []
    U1 = U[1:2, ...]
    big = thermalise(args.transfer_beta, args.transfer_L, args.sweeps, seed=991)[0:1, ...]
    for target, Ut in (("config 1", U1), (f"{args.transfer_L}^2", big)):
        W = WilsonDirac(Ut, mass=mc + 0.1)
        L = Ut.shape[2]
        eta = RandomStreams(seed=8, n_chains=1, xp=xp).complex_normal((L, L, 2, 1))
        it0, t0 = fgmres_iters(W, eta, None)
        out.append(dict(target=target, network="none", iterations=it0, seconds=t0))
        it1, t1 = fgmres_iters(W, eta, net)
        c_tr = eval_cost(net, Ut, W)
        fresh, rec = trained_net(Ut, mc + 0.1)
        c_fresh = eval_cost(fresh, Ut, W)
        it2, t2 = fgmres_iters(W, eta, fresh)
        # retraining from the transferred weights until within 5% of the fresh network's cost
        re = net.copy()
        steps = 0
        while eval_cost(re, Ut, W) > 1.05 * c_fresh and steps < 200:
            train_preconditioner(re, Ut, W.apply, steps=10, batch=4, lr=0.02, seed=1000 + steps)
            steps += 10
        out.append(dict(target=target, network="transferred", iterations=it1, seconds=t1,
                        cost=c_tr, retrain_steps=steps))
        out.append(dict(target=target, network="trained here (200 steps)", iterations=it2,
                        seconds=t2, cost=c_fresh, train_seconds=rec.seconds))
    return out


if __name__ == "__main__":
    main()
