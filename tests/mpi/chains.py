"""MPI driver (tests/test_mpi.py): chains over ranks against one process, bit for bit.

Run as ``mpiexec -n R python tests/mpi/chains.py OUT.npz [xp]``. Every rank holds a block of the
global chains (:mod:`lattice_ml.parallel`); rank 0 gathers the results in global chain order,
computes the same jobs alone (:data:`~lattice_ml.parallel.SERIAL`, all chains in one process),
asserts that both agree bit for bit and writes the gathered results to OUT.npz, so that the
wrapper can also compare launches on different rank counts. The jobs:

* phi^4 HMC (4x4, 5 chains, tau jitter): final fields, dH and acceptance histories, <M^2>;
* SU(3) HMC in 4D (2^4, Wilson gauge action, 5 chains): links, dH, plaquette history;
* a batch of Wilson CG solves on those configurations (one right-hand side per chain):
  solutions, iterations, true residuals;
* two reverse-KL training steps of a phi^4 coupling flow, batch 8 in 4 fixed chunks of 2 split
  over the ranks, the gradient reduced with ``ordered_sum``: losses and parameters; rank 0 also
  checks the chunked gradient against the one-batch gradient of ``reverse_kl_grads`` to 1e-13.
"""

import sys

import numpy as np

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy
from lattice_ml.fermions.solvers import cg
from lattice_ml.fermions.wilson import WilsonDirac
from lattice_ml.flows.flow import make_phi4_flow
from lattice_ml.flows.train import reverse_kl_grads
from lattice_ml.gauge import GaugeAction
from lattice_ml.gauge.observables import average_plaquette
from lattice_ml.groups import random_near_identity
from lattice_ml.lattice import Lattice
from lattice_ml.optim import Adam
from lattice_ml.parallel import SERIAL, world
from lattice_ml.samplers import HMC, EuclideanSpace, Level, LieGroupSpace
from lattice_ml.scalar import Phi4Action, magnetization

N_CHAINS = 5
SEED = 11


def phi4_hmc(comm, xp):
    block = comm.chains(N_CHAINS)
    rng = RandomStreams(SEED, block.count, xp, first_chain=block.start)
    action = Phi4Action(Lattice((4, 4)), "standard", m2=-1.0, lam=1.5)
    hmc = HMC([Level([action], 5, "omelyan")], EuclideanSpace(), tau=1.0, tau_jitter=0.3)
    phi = rng.normal((4, 4))
    dh, acc, m2 = [], [], []
    for _ in range(6):
        phi, info = hmc.step(phi, rng)
        dh.append(comm.gather_chains(info.delta_h))
        acc.append(comm.gather_chains(info.accepted))
        m = magnetization(phi)
        m2.append(comm.sum_chains(m * m, mean=True))
    out = {"field": comm.gather_chains(phi)}
    if comm.is_root:
        out.update(dh=xp.stack(dh), accepted=xp.stack(acc), m2=xp.stack(m2))
    return out


def su3_hmc(comm, xp):
    block = comm.chains(N_CHAINS)
    rng = RandomStreams(SEED + 1, block.count, xp, first_chain=block.start)
    hmc = HMC([Level([GaugeAction(5.5, 3, "wilson")], 4, "leapfrog")], LieGroupSpace(3), tau=0.5)
    U = random_near_identity(rng, (4, 2, 2, 2, 2), 3, 0.3)
    dh, plaq = [], []
    for _ in range(3):
        U, info = hmc.step(U, rng)
        dh.append(comm.gather_chains(info.delta_h))
        plaq.append(comm.gather_chains(average_plaquette(U)))
    out = {"links": comm.gather_chains(U)}
    if comm.is_root:
        out.update(dh=xp.stack(dh), plaquette=xp.stack(plaq))
    return out, U, rng


def wilson_cg(comm, U, rng):
    """One right-hand side per chain on that chain's configuration."""
    b = rng.complex_normal((2, 2, 2, 2, 4, 3))
    D = WilsonDirac(U, 0.3)
    x, info = cg(D.normal, b, tol=1e-10)
    return {"solution": comm.gather_chains(x),
            "iterations": comm.gather_chains(np.asarray(info.iterations)),
            "residual": comm.gather_chains(np.asarray(info.residual))}


def flow_training(comm, xp, check_plain=False):
    B, chunk = 8, 2
    block = comm.chunks(B // chunk)
    action = Phi4Action(Lattice((4, 4)), "standard", m2=-1.0, lam=1.5)
    flow = make_phi4_flow((4, 4), xp, n_layers=2, hidden=(4,), seed=3, final_scale=0.5)
    opt = Adam(1e-2)
    rng = RandomStreams(SEED + 2, block.count * chunk, xp, first_chain=block.start * chunk)
    losses, plain_err = [], []
    for _ in range(2):
        z = flow.draw_latent(rng)
        parts, per_chain = [], []
        for j in range(block.count):
            zj = z[j * chunk:(j + 1) * chunk, ...]
            x, logJ, caches = flow.forward_cache(zj)
            S = action.action(x)
            per_chain.append(flow.prior_log_prob(zj) - logJ + S)
            gx = action.force(x) * (-1.0 / B)
            _, g = flow.vjp(caches, gx, xp.full((chunk,), -1.0 / B, dtype=logJ.dtype))
            parts.append(g)
        grads = comm.ordered_sum(parts)
        losses.append(comm.sum_chains(xp.concat(per_chain), mean=True))
        if check_plain:  # one process, the whole batch in one contraction: round-off only
            _, g1, _ = reverse_kl_grads(flow, action, z)
            plain_err.append(max_rel_diff(grads, g1))
        flow.params = opt.step(flow.params, grads)
    return {"loss": xp.stack(losses), **flatten("params", flow.params)}, plain_err


def flatten(prefix, tree):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flatten(f"{prefix}.{k}", v))
        return out
    return {prefix: tree}


def max_rel_diff(a, b):
    fa, fb = flatten("", a), flatten("", b)
    scale = max(float(np.max(np.abs(to_numpy(v)))) for v in fb.values())
    return max(float(np.max(np.abs(to_numpy(fa[k]) - to_numpy(fb[k])))) for k in fb) / scale


def run_all(comm, xp, check_plain=False):
    out = {f"phi4.{k}": v for k, v in phi4_hmc(comm, xp).items()}
    su3, U, rng = su3_hmc(comm, xp)
    out.update({f"su3.{k}": v for k, v in su3.items()})
    out.update({f"cg.{k}": v for k, v in wilson_cg(comm, U, rng).items()})
    flow, err = flow_training(comm, xp, check_plain)
    out.update({f"flow.{k}": v for k, v in flow.items()})
    return out, err


def main():
    path = sys.argv[1]
    xp = namespace_by_name(sys.argv[2] if len(sys.argv) > 2 else "numpy")
    comm = world()
    got, _ = run_all(comm, xp)
    if not comm.is_root:
        return
    ref, err = run_all(SERIAL, xp, check_plain=True)
    assert set(got) == set(ref), (sorted(got), sorted(ref))
    for k in ref:
        a, b = to_numpy(got[k]), to_numpy(ref[k])
        assert a.shape == b.shape and a.dtype == b.dtype, (k, a.shape, b.shape, a.dtype, b.dtype)
        assert np.array_equal(a, b), f"{k}: {comm.size} ranks differ from one process"
    assert max(err) < 1e-13, f"chunked flow gradient vs one batch: {err}"
    np.savez(path, size=comm.size, plain_flow_grad_rel_diff=max(err),
             **{k: to_numpy(v) for k, v in ref.items()})
    print(f"ranks={comm.size} ok: {len(ref)} arrays bit-identical to one process; "
          f"flow gradient vs one batch {max(err):.2e}")


if __name__ == "__main__":
    main()
