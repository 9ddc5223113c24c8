"""MPI driver (tests/test_domain.py): operators on a decomposed lattice against one process.

Run as ``mpiexec -n R python tests/mpi/domain_ops.py BACKEND OUT.npz SET [GRID ...]``, a grid
written ``2x1x1x1``, SET ``core`` (below) or ``more`` (stout smearing, the clover operator,
BiCGstab, the topological charge, the Symanzik force, the even/odd operator and a CG on its
normal equations, an RK3 Wilson-flow step). On every grid of R ranks over the 4^4 lattice the links (Haar, 2 chains)
and fields are decomposed (:class:`lattice_ml.parallel.Decomposition`) and every rank computes,
with the operators of the library unchanged: the plaquette, the Wilson action and force of
SU(3), one pure-gauge HMC trajectory (Delta H, new links, momenta from
``DomainRandomStreams``), the Wilson Dirac operator (antiperiodic time) applied and a CGNR
solve (iterations and solution), the phi^4 action and one phi^4 HMC trajectory. Rank 0 writes
the gathered results of every grid to OUT.npz, and adds the grid 1x1x1x1 on one rank
(``SERIAL``) and the plain one-process arrays (``plain/...``, NumPy with its kernels) for the
test to compare.
"""

import sys

import numpy as np

from lattice_ml.backend import CounterRandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions.solvers import cgne
from lattice_ml.fermions.wilson import WilsonDirac
from lattice_ml.gauge.action import GaugeAction
from lattice_ml.gauge.observables import average_plaquette
from lattice_ml.groups import haar_random
from lattice_ml.lattice import Lattice
from lattice_ml.parallel import SERIAL, Decomposition, DomainArray, world
from lattice_ml.samplers import HMC, EuclideanSpace, Level, LieGroupSpace
from lattice_ml.scalar import Phi4Action

SHAPE = (4, 4, 4, 4)
B = 2


def host(x):
    return np.asarray(to_numpy(x.gather() if isinstance(x, DomainArray) else x))


def compute(xp, dec=None):
    """Every quantity of the module docstring, host arrays; ``dec`` None: plain arrays."""
    out = {}
    U = haar_random(CounterRandomStreams(11, B, xp), (4,) + SHAPE, 3)
    psi = CounterRandomStreams(12, B, xp).complex_normal(SHAPE + (4, 3))
    phi = 0.5 * CounterRandomStreams(13, B, xp).normal(SHAPE)

    def rng(seed, site_axis):
        r = CounterRandomStreams(seed, B, xp)
        tails = ((3, 3), (8,)) if site_axis == 2 else ((),)   # links+momenta / phi^4
        return r if dec is None else dec.random(r, site_axis, tails)

    if dec is not None:
        drawn = dec.random(CounterRandomStreams(12, B, xp), 1, ((4, 3),)).complex_normal(
            SHAPE + (4, 3))
        assert isinstance(drawn, DomainArray)
        assert np.array_equal(host(drawn), host(psi)), "block draw differs from the global one"
        U, psi, phi = dec.scatter(U, 2), dec.scatter(psi, 1), dec.scatter(phi, 1)
    gauge = GaugeAction(5.5, 3)
    out["plaquette"] = host(average_plaquette(U))
    out["gauge_action"] = host(gauge.action(U))
    out["gauge_force"] = host(gauge.force(U))
    hmc = HMC([Level([gauge], 4, "leapfrog")], LieGroupSpace(3), tau=0.5)
    U1, info = hmc.step(U, rng(21, 2))
    out["hmc_delta_h"], out["hmc_links"] = host(info.delta_h), host(U1)
    out["hmc_accepted"] = host(info.accepted)
    D = WilsonDirac(U, 0.3, boundary="antiperiodic")
    out["wilson_apply"] = host(D.apply(psi))
    x, sinfo = cgne(D.apply, D.apply_dagger, psi, tol=1e-10)
    out["cg_solution"], out["cg_iterations"] = host(x), np.asarray(sinfo.iterations)
    phi4 = Phi4Action(Lattice(SHAPE), "standard", m2=-1.0, lam=1.5)
    out["phi4_action"] = host(phi4.action(phi))
    hmc = HMC([Level([phi4], 8, "omelyan")], EuclideanSpace(), tau=0.5)
    phi1, info = hmc.step(phi, rng(22, 1))
    out["phi4_delta_h"], out["phi4_field"] = host(info.delta_h), host(phi1)
    out["phi4_accepted"] = host(info.accepted)
    return out


def compute_more(xp, dec=None):
    """The operators of SET ``more`` (module docstring), host arrays."""
    from lattice_ml.fermions.solvers import bicgstab, cg
    from lattice_ml.gauge.topology import topological_charge_clover
    from lattice_ml.gauge.wilson_flow import rk3_step
    from lattice_ml.smearing.stout import stout_smear
    U = haar_random(CounterRandomStreams(31, B, xp), (4,) + SHAPE, 3)
    psi = CounterRandomStreams(32, B, xp).complex_normal(SHAPE + (4, 3))
    if dec is not None:
        U, psi = dec.scatter(U, 2), dec.scatter(psi, 1)
    out = {"stout": host(stout_smear(U, 0.1)),
           "topological_charge": host(topological_charge_clover(U)),
           "symanzik_force": host(GaugeAction(4.0, 3, "symanzik").force(U)),
           "rk3_flow_step": host(rk3_step(U, 0.02))}
    D = WilsonDirac(U, 0.3, csw=1.0)
    out["clover_apply"] = host(D.apply(psi))
    x, info = bicgstab(D.apply, psi, tol=1e-10)
    out["bicgstab_solution"], out["bicgstab_iterations"] = host(x), np.asarray(info.iterations)
    W = WilsonDirac(U, 0.3)
    eta = W.even(psi)
    out["eo_apply"] = host(W.apply_eo(eta))
    x, info = cg(W.normal_eo, eta, tol=1e-10)
    out["eo_cg_solution"], out["eo_cg_iterations"] = host(x), np.asarray(info.iterations)
    return out


def main():
    backend, path, which = sys.argv[1], sys.argv[2], sys.argv[3]
    comm = world()
    xp = namespace_by_name(backend)
    compute_set = {"core": compute, "more": compute_more}[which]
    grids = [tuple(int(v) for v in g.split("x")) for g in sys.argv[4:]]
    results = {}
    for dims in grids:
        res = compute_set(xp, Decomposition(comm, SHAPE, dims))
        results.update({f"{'x'.join(map(str, dims))}/{k}": v for k, v in res.items()})
    if comm.is_root:
        if comm.size > 1:
            res = compute_set(xp, Decomposition(SERIAL, SHAPE, (1,) * len(SHAPE)))
            results.update({f"serial/{k}": v for k, v in res.items()})
        plain = compute_set(namespace_by_name("numpy"))
        results.update({f"plain/{k}": v for k, v in plain.items()})
        np.savez(path, **results)
        print(f"ranks={comm.size} grids={sys.argv[4:]} ok")


if __name__ == "__main__":
    main()
