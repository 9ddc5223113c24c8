"""CASK against plain trainable stout at the same parameter count: the self-learning
(action-matching) loss of an effective fermion action on a Schwinger-model ensemble.

Ensemble: 2D U(1) with two Wilson flavours (``lattice-ml run``, ``theory.name = schwinger``),
configurations saved every trajectory. Target: the exact fermion action of every configuration,
``S_f(U) = -log det(D^dag D)(U; m) = -2 log|det D(U; m)|`` (dense determinant). Effective action
(SLHMC, Nagai & Tomiya): ``S_theta(U) = -2 log|det D(U_theta; m_eff)|`` on links smeared by a
network, at a heavier mass ``m_eff``. Every network is trained (Adam) on the configurations of
half of the chains to minimise the variance of ``delta = S_f - S_theta`` (a constant offset does
not change an acceptance), the gradient by the network's hand-written backward of the exact
force of ``S_theta`` (``F = (1/2) TA(sum_i M_hop(D^-dag e_i, e_i))`` with ``hopping_force_matrix``, FD-checked here first).
Measured on the held-out chains: ``std(delta)`` and the SLHMC acceptance it implies for a
proposal one trajectory away, ``<min(1, exp(-(delta(U_{t+1}) - delta(U_t))))>`` (molecular
dynamics of ``S_theta`` conserves ``H_theta``, the Metropolis test uses ``H = H_theta + delta``).

``--target ape`` instead fits the networks to reproduce the links after APE smearing with the
unitary projection (a nonlinear map of the staples; loss: the mean of ``1 - Re Tr(U_theta
V^dag)/N`` over the links) on the same configurations, measured on the held-out chains.

Usage: ``python benchmarks/bench_cask.py [--L 6] [--steps 300] [--target action|ape]``; writes
``benchmarks/results/cask-<target>-*.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

from lattice_ml.backend import namespace_by_name  # noqa: E402
from lattice_ml.fermions import WilsonDirac, hopping_force_matrix  # noqa: E402
from lattice_ml.groups import expm_algebra, generators, project_algebra  # noqa: E402
from lattice_ml.optim import Adam  # noqa: E402
from lattice_ml.smearing import CASKSmearing, StoutSmearing  # noqa: E402

XP = namespace_by_name("numpy")


def ensemble(L: int, beta: float, mass: float, n_chains: int, n_samples: int, seed: int,
             theory: str = "schwinger"):
    """Configurations ``[chain, time, D, *sites, N, N]`` of a Schwinger-model run (2D, L x L) or
    of pure SU(2) in 4D (``theory = "su2"``, L^4)."""
    from lattice_ml.cli.main import main
    from lattice_ml.io import Ensemble

    if theory == "su2":
        sets = ["--set", "theory.name=su2", "--set", f"lattice.shape=[{L},{L},{L},{L}]"]
    else:
        sets = ["--set", "theory.name=schwinger", "--set", f"lattice.shape=[{L},{L}]",
                "--set", f"theory.mass={mass}", "--set", "theory.n_sources=1"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        code = main(["run", "--out", str(out), *sets, "--set", f"theory.beta={beta}",
                     "--set", f"sampler.n_chains={n_chains}",
                     "--set", "sampler.n_therm=100", "--set", f"sampler.n_samples={n_samples}",
                     "--set", "output.save_every=1",
                     "--set", f"run.seed={seed}", "--set", "run.progress=never"])
        if code != 0:
            raise SystemExit(f"the ensemble run failed ({code})")
        cfgs = []
        for path in sorted((out / "configs").glob("*.h5")):
            with Ensemble(path) as ens:
                cfgs.append(np.asarray(ens.configurations()))
    return np.stack(cfgs, axis=1)


def _dense(U, mass):
    """``(M [K, n, n], n)``: the Wilson operator of every configuration as a dense matrix."""
    K, sites = U.shape[0], U.shape[2:-2]
    n = int(np.prod(sites)) * 2
    Ur = np.repeat(U, n, axis=0)
    eye = np.tile(np.eye(n, dtype=np.complex128), (K, 1)).reshape((K * n, *sites, 2, 1))
    cols = np.asarray(WilsonDirac(XP.asarray(Ur), mass, check=False).apply(XP.asarray(eye)))
    return np.swapaxes(cols.reshape(K, n, n), 1, 2), n


def fermion_action(U, mass, with_force=True):
    """``S = -2 log|det D(U; m)|`` ``[K]`` and its force ``F = -dS/dU`` (exact, dense)."""
    M, n = _dense(U, mass)
    S = -2.0 * np.linalg.slogdet(M)[1]
    if not with_force:
        return S, None
    K, sites = U.shape[0], U.shape[2:-2]
    Dinv = np.linalg.inv(M)
    # L_i = D^{-dag} e_i (entries conj(Dinv[i, :])), R_i = e_i: sum_i L_i^dag dH R_i = Tr D^-1 dH
    Lv = np.conj(Dinv).reshape((K * n, *sites, 2, 1))
    Rv = np.tile(np.eye(n, dtype=np.complex128), (K, 1)).reshape((K * n, *sites, 2, 1))
    W = WilsonDirac(XP.asarray(np.repeat(U, n, axis=0)), mass, check=False)
    Mf = np.asarray(hopping_force_matrix(W, XP.asarray(Lv), XP.asarray(Rv)))
    Mf = Mf.reshape((K, n) + Mf.shape[1:]).sum(axis=1)
    return S, 0.5 * np.asarray(project_algebra(XP.asarray(Mf)))


def check_force(U, mass, h=1e-5) -> float:
    """Relative deviation of the force from a central difference along a random direction."""
    _, F = fermion_action(U, mass)
    T = np.asarray(generators(1, XP, dtype=XP.complex128))
    c = np.random.default_rng(0).standard_normal((*U.shape[:-2], T.shape[0]))
    X = np.einsum("...a,aij->...ij", c, T)
    pred = 2 * np.einsum("...ij,...ji->...", X, F).reshape(U.shape[0], -1).sum(1).real
    vals = [fermion_action(np.asarray(expm_algebra(XP.asarray(s * X))) @ U, mass, False)[0]
            for s in (h, -h)]
    fd = (vals[0] - vals[1]) / (2 * h)
    return float(np.max(np.abs(fd - pred) / np.abs(pred)))


def delta_and_grad(net, U, mass, m_eff, want_grad=True):
    """``delta = S_f(U; m) - S_f(U_theta; m_eff)`` ``[K]`` and d/dtheta of
    ``(1/2) mean (delta - mean delta)^2``."""
    Up = np.asarray(net.forward(XP.asarray(U)))
    S_eff, F_eff = fermion_action(Up, m_eff, with_force=want_grad)
    S_true = fermion_action(U, mass, with_force=False)[0]
    d = S_true - S_eff
    if not want_grad:
        return d, None
    w = (d - d.mean()) / d.size            # dLoss/dS_true...; dLoss/dS_eff = -w
    _, g = net.backward(XP.asarray(-w[:, None, None, None, None, None] * F_eff))
    return d, np.asarray(g)


def ape_loss_and_grad(net, U, V, want_grad=True):
    """``L = mean over links of (1 - Re Tr(U_theta V^dag)/N)`` against target links ``V`` and
    dL/dtheta (the force of L at the smeared links: ``F' = -(1/2)(1/(N n)) TA(U' V^dag)``)."""
    N = U.shape[-1]
    n_links = int(np.prod(U.shape[:-2]))
    Up = np.asarray(net.forward(XP.asarray(U)))
    M = Up @ np.conj(np.swapaxes(V, -1, -2))
    L = float(1.0 - np.trace(M, axis1=-2, axis2=-1).real.sum() / (N * n_links))
    if not want_grad:
        return L, None
    F = -0.5 / (N * n_links) * np.asarray(project_algebra(XP.asarray(M)))
    return L, np.asarray(net.backward(XP.asarray(F))[1])


def train(net, U_train, mass, m_eff, steps, lr, batch=32, seed=0, target=None):
    rng = np.random.default_rng(seed)
    opt = Adam(lr)
    theta = np.array(net.parameters(), dtype=float)
    hist = []
    for _ in range(steps):
        idx = rng.choice(U_train.shape[0], size=min(batch, U_train.shape[0]), replace=False)
        net.set_parameters(theta)
        if target is None:
            d, g = delta_and_grad(net, U_train[idx], mass, m_eff)
            hist.append(0.5 * float(np.var(d)))
        else:
            loss, g = ape_loss_and_grad(net, U_train[idx], target[idx])
            hist.append(loss)
        theta = opt.step(theta, g)
    net.set_parameters(theta)
    return hist


def evaluate(net, U_chains, mass, m_eff):
    """Held-out ``std(delta)`` and the implied acceptance one trajectory away."""
    C, T = U_chains.shape[:2]
    d = delta_and_grad(net, U_chains.reshape((C * T,) + U_chains.shape[2:]), mass, m_eff,
                       want_grad=False)[0].reshape(C, T)
    acc = np.minimum(1.0, np.exp(-np.diff(d, axis=1)))
    return float(np.std(d)), float(np.mean(acc)), float(np.std(acc) / np.sqrt(acc.size))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--L", type=int, default=6)
    p.add_argument("--beta", type=float, default=2.0)
    p.add_argument("--mass", type=float, default=0.05)
    p.add_argument("--m-eff", type=float, default=0.2)
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--samples", type=int, default=120)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch", type=int, default=32, help="configurations per training step")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--target", choices=("action", "ape"), default="action",
                   help="action: the SLHMC action-matching loss; ape: fit the links after "
                        "--ape-steps APE steps (alpha --ape-alpha, unitary projection)")
    p.add_argument("--ape-alpha", type=float, default=0.5)
    p.add_argument("--ape-steps", type=int, default=2)
    p.add_argument("--theory", choices=("schwinger", "su2"), default="schwinger",
                   help="schwinger: 2D U(1) with two Wilson flavours; su2: pure SU(2), 4D "
                        "(only --target ape)")
    p.add_argument("--models", default="",
                   help="comma-separated substrings: run only the models whose names match")
    a = p.parse_args(argv)
    if a.theory == "su2" and a.target != "ape":
        raise SystemExit("--theory su2 has no dense fermion action: use --target ape")
    t0 = time.process_time()
    U = ensemble(a.L, a.beta, a.mass, a.chains, a.samples, a.seed, a.theory)
    t_ens = time.process_time() - t0
    dev = check_force(U[0, :2], a.m_eff) if a.theory == "schwinger" else 0.0
    print(f"# ensemble {U.shape[:2]} in {t_ens:.0f} s CPU; force FD deviation {dev:.2e}")
    assert dev < 1e-6, dev
    half = a.chains // 2
    train_set = U[:half].reshape((-1,) + U.shape[2:])
    test_set = U[half:]
    D = U.shape[2]
    models = {
        "none (thin links, m_eff)": StoutSmearing(1, "plaquette", D=D, rho=0.0),
        "stout 4 layers, plaquette (4)": StoutSmearing(4, "plaquette", D=D, rho=0.0),
        "stout 2 layers, plaq+rect (4)": StoutSmearing(2, ["plaquette", "rectangle"], D=D,
                                                        rho=0.0),
        "CASK 2 layers, plaquette (4)": CASKSmearing(2, "plaquette", D=D, rho=0.0, beta=0.0),
        "CASK 1 layer, plaq+rect (4)": CASKSmearing(1, ["plaquette", "rectangle"], D=D, rho=0.0,
                                                    beta=0.0),
        "stout 2 layers, plaquette (2)": StoutSmearing(2, "plaquette", D=D, rho=0.0),
        "CASK 1 layer, plaquette (2)": CASKSmearing(1, "plaquette", D=D, rho=0.0, beta=0.0),
    }
    if a.models:
        keep = [w.strip() for w in a.models.split(",")]
        models = {k: v for k, v in models.items() if any(w in k for w in keep)}
    rows = []
    if a.target == "ape":
        from lattice_ml.smearing import ape_smear
        ape = lambda V: np.asarray(ape_smear(XP.asarray(V), a.ape_alpha, a.ape_steps))  # noqa
        tr_target = ape(train_set)
        te_flat = test_set.reshape((-1,) + test_set.shape[2:])
        te_target = ape(te_flat)
        # the force of the loss by FD along a random direction of all links (one model)
        probe = CASKSmearing(1, "plaquette", D=D, rho=0.1, beta=1.0)
        L0, g0 = ape_loss_and_grad(probe, train_set[:4], tr_target[:4])
        dvec = np.random.default_rng(1).standard_normal(g0.size)
        th = probe.parameters().copy()
        vals = []
        for sgn in (1e-6, -1e-6):
            probe.set_parameters(th + sgn * dvec)
            vals.append(ape_loss_and_grad(probe, train_set[:4], tr_target[:4], False)[0])
        fd_dev = abs((vals[0] - vals[1]) / 2e-6 - g0 @ dvec) / abs(g0 @ dvec)
        print(f"# APE target: loss gradient FD deviation {fd_dev:.2e}")
        assert fd_dev < 1e-5, fd_dev
    for name, net in models.items():
        t1 = time.process_time()
        steps = 0 if name.startswith("none") else a.steps
        if a.target == "ape":
            hist = train(net, train_set, a.mass, a.m_eff, steps, a.lr, batch=a.batch,
                         seed=a.seed, target=tr_target)
            L = ape_loss_and_grad(net, te_flat, te_target, want_grad=False)[0]
            row = {"model": name, "heldout_loss": L}
        else:
            hist = train(net, train_set, a.mass, a.m_eff, steps, a.lr, batch=a.batch,
                         seed=a.seed)
            sd, acc, acc_err = evaluate(net, test_set, a.mass, a.m_eff)
            row = {"model": name, "heldout_std_delta": sd, "acceptance": acc,
                   "acceptance_err": acc_err}
        row.update({"n_parameters": 0 if name.startswith("none") else net.n_parameters,
                    "final_train_loss": float(np.mean(hist[-20:])) if hist else None,
                    "theta": [float(x) for x in np.asarray(net.parameters())],
                    "cpu_s": time.process_time() - t1})
        rows.append(row)
        print(rows[-1])
    cols = ["heldout_loss"] if a.target == "ape" else ["heldout_std_delta", "acceptance"]
    harness.print_table(rows, ["model", "n_parameters", *cols, "final_train_loss", "cpu_s"])
    print("# written", harness.record(f"cask-{a.target}", rows, "numpy", extra={
        "theory": a.theory, "target": a.target, "ape_alpha": a.ape_alpha, "ape_steps": a.ape_steps,
        "L": a.L, "beta": a.beta, "mass": a.mass, "m_eff": a.m_eff, "chains": a.chains,
        "samples": a.samples, "steps": a.steps, "lr": a.lr, "batch": a.batch, "seed": a.seed,
        "train_configs": int(train_set.shape[0]), "test_configs": int(np.prod(test_set.shape[:2])),
        "ensemble_cpu_s": t_ens, "force_fd_deviation": dev}))


if __name__ == "__main__":
    main()
