"""Normalizing flows for φ⁴: training cost, cost per independent sample, acceptance versus L.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_flows.py train   [--steps 2500 ...]
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_flows.py compare PARAMS.npz [--n-updates 300]
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_flows.py step    [--batch 64]
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_flows.py scaling [--L 6 8 10 12 ...]

``train``: reverse-KL training of the tutorial architecture (Albergo et al., arXiv:2101.08176:
16 affine couplings, checkerboard masks, conditioners [1, 8, 8, 2], kernel 3, leaky ReLU, tanh)
for L = 8, m² = -4, λ = 8 (standard form), then the ESS on a fresh sample of ``--ess-samples``
configurations and the acceptance of a flow-Metropolis chain; writes ``flows-train-*.json`` and
the trained parameters (``.npz``) to ``benchmarks/results``.

``compare``: flow Metropolis with the trained flow against HMC (Omelyan) on the same physics:
acceptance, <|M|>, χ₂ = V <M²> (M: the field averaged over the lattice), τ_int (Γ-method) and the
cost per independent sample of |M|. Writes ``flows-compare-*.json``.

``step``: seconds per training step (forward, vjp, Adam) of that architecture in float32 and
float64 for each ``--batch``, against the same architecture in PyTorch autograd when ``torch`` is
importable (without torch the record says so): ``--rounds`` interleaved rounds (ours, torch,
ours, ...), so that load from other processes hits both; medians, extremes and the per-round
ratios are recorded. Threads: as the environment sets them (``OPENBLAS_NUM_THREADS=1
NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1`` for one; unset for all CPUs), PyTorch gets the same
number. ``--backend cupy`` runs both on the GPU (our flow on CuPy, PyTorch on ``cuda``).

``scaling``: at fixed physics in the hopping form, β = 0.5, λ = 0.5 — exactly the tutorial point
(φ_standard = φ_hopping / 2 maps S_standard(m² = -4, λ = 8) onto S_hopping - V/2) — for each L:
train a smaller flow for a fixed number of steps, then measure flow Metropolis, flow HMC and
plain HMC (Omelyan) on ``--chains`` chains: acceptance, τ_int of |M| (Γ-method) and the cost
per independent sample, wall time per update and chain × 2 τ_int. Writes
``flows-scaling-*.json``.

BLAS threads: the matrices are small; one BLAS thread per process is fastest on a shared CPU.
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
from lattice_ml.flows import FlowTrainer, ProgressPrinter, make_phi4_flow  # noqa: E402
from lattice_ml.lattice import Lattice  # noqa: E402
from lattice_ml.optim import Adam, cosine_decay  # noqa: E402
from lattice_ml.samplers import HMC, EuclideanSpace, Level  # noqa: E402
from lattice_ml.samplers.flow_hmc import FlowHMC  # noqa: E402
from lattice_ml.samplers.flow_mcmc import FlowMetropolis  # noqa: E402
from lattice_ml.scalar import Phi4Action  # noqa: E402
from lattice_ml.stats import gamma_method  # noqa: E402

TUTORIAL = {"n_layers": 16, "hidden": [8, 8], "kernel": 3}


def flow_ess_and_acceptance(flow, action, xp, n_samples: int, n_chain: int, seed: int):
    """ESS per configuration on ``n_samples`` fresh flow samples (in batches of 512) and the
    acceptance of ``n_chain`` independence-Metropolis updates of 64 chains."""
    from lattice_ml.flows import effective_sample_size

    lw = []
    rng = RandomStreams(seed, 512, xp, dtype=dtype_name(xp, flow))
    for _ in range(max(1, n_samples // 512)):
        x, logq = flow.sample(rng)
        lw.append(to_numpy(-action.action(x) - logq).astype(np.float64))
    ess = effective_sample_size(np.concatenate(lw))
    sampler = FlowMetropolis(flow, action)
    _, hist = sampler.run(RandomStreams(seed + 1, 64, xp, dtype=dtype_name(xp, flow)), n_chain,
                          {})
    return ess, sampler.summary(hist)["acceptance"], len(lw) * 512


def dtype_name(xp, flow) -> str:
    leaf = flow.params["layer0"]["conv0"]["weight"]
    return "float32" if leaf.dtype == xp.float32 else "float64"


def cmd_train(args) -> None:
    xp = namespace_by_name("numpy")
    dtype = getattr(xp, args.dtype)
    lat = Lattice((args.L, args.L))
    action = Phi4Action(lat, "standard", m2=args.m2, lam=args.lam)
    flow = make_phi4_flow(lat.shape, xp, n_layers=args.layers, hidden=args.hidden,
                          kernel=args.kernel, seed=args.seed, dtype=dtype)
    lr = cosine_decay(args.lr, args.steps, args.lr_min) if args.cosine else args.lr
    trainer = FlowTrainer(flow, action, Adam(lr), batch_size=args.batch, seed=args.seed,
                          max_grad_norm=args.clip, dtype=args.dtype)
    t0 = time.perf_counter()
    trainer.train(args.steps, ProgressPrinter(args.print_every))
    t_train = time.perf_counter() - t0
    ess, acc, n = flow_ess_and_acceptance(flow, action, xp, args.ess_samples, args.chain_steps,
                                          args.seed + 100)
    ess_hist = np.array(trainer.history["ess"])
    per_100 = [float(np.mean(ess_hist[i:i + 100])) for i in range(0, len(ess_hist), 100)]
    row = {"L": args.L, "m2": args.m2, "lam": args.lam, "steps": args.steps,
           "batch": args.batch, "dtype": args.dtype, "lr": args.lr, "cosine": args.cosine,
           "lr_min": args.lr_min, "clip": args.clip, "n_layers": args.layers,
           "hidden": args.hidden, "kernel": args.kernel, "n_parameters": flow.n_parameters,
           "train_seconds": t_train, "seconds_per_step": t_train / args.steps,
           "ess": ess, "ess_samples": n, "flow_mcmc_acceptance": acc,
           "flow_mcmc_updates": 64 * args.chain_steps,
           "batch_ess_mean_per_100_steps": per_100,
           "final_loss_mean_last_100": float(np.mean(trainer.history["loss"][-100:])),
           "skipped_steps": trainer.skipped}
    print(f"# trained {args.steps} steps in {t_train:.1f} s; ESS = {ess:.3f} on {n} samples; "
          f"flow-MCMC acceptance = {acc:.3f}")
    path = harness.record("flows-train", [row], "numpy")
    np.savez(path.with_suffix(".npz"), **{
        "/".join(k): v for k, v in _flat_host(flow.params_to_host()).items()})
    print(f"# written {path}")


def _flat_host(tree, prefix=()):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat_host(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


def _threads() -> int:
    """The thread count of this process (``OPENBLAS_NUM_THREADS``, else all CPUs)."""
    n = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return int(n) if n else (os.cpu_count() or 1)


def torch_step_fn(L: int, batch: int, dtype: str, device: str = "cpu", threads: int = 1):
    """A reverse-KL training step of the tutorial architecture in PyTorch (on ``device``, with
    ``threads`` CPU threads), or None when torch is not importable. Idiomatic PyTorch, as the
    tutorial of Albergo et al. writes it: ``Conv2d`` with circular padding, masks applied by
    multiplication, autograd, ``torch.optim.Adam``."""
    try:
        import torch
    except ImportError:
        return None
    tdt = torch.float32 if dtype == "float32" else torch.float64
    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def conv_net():
        sizes = [1, *TUTORIAL["hidden"], 2]
        net = []
        for i in range(len(sizes) - 1):
            net.append(torch.nn.Conv2d(sizes[i], sizes[i + 1], TUTORIAL["kernel"],
                                       padding=TUTORIAL["kernel"] // 2,
                                       padding_mode="circular"))
            net.append(torch.nn.LeakyReLU() if i < len(sizes) - 2 else torch.nn.Tanh())
        return torch.nn.Sequential(*net).to(device=device, dtype=tdt)

    masks = []
    for i in range(TUTORIAL["n_layers"]):
        m = torch.tensor((np.indices((L, L)).sum(0) % 2 == i % 2).astype(float), dtype=tdt,
                         device=device)
        masks.append(m)
    nets = torch.nn.ModuleList([conv_net() for _ in range(TUTORIAL["n_layers"])])
    opt = torch.optim.Adam(nets.parameters(), lr=1e-3)

    def action(x):
        out = -4.0 * x ** 2 + 8.0 * x ** 4
        for mu in (1, 2):
            out = out + 2 * x ** 2 - x * torch.roll(x, -1, mu) - x * torch.roll(x, 1, mu)
        return out.sum(dim=(1, 2))

    def step():
        z = torch.randn(batch, L, L, dtype=tdt, device=device)
        logq = -0.5 * (z ** 2).sum(dim=(1, 2))
        x = z
        for m, net in zip(masks, nets):
            out = net((m * x).unsqueeze(1))
            s, t = out[:, 0], out[:, 1]
            x = m * x + (1 - m) * (x * torch.exp(s) + t)
            logq = logq - ((1 - m) * s).sum(dim=(1, 2))
        loss = (logq + action(x)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()

    return step


def torch_step_time(L: int, batch: int, dtype: str, device: str = "cpu", threads: int = 1):
    """Seconds per PyTorch training step (:func:`torch_step_fn`), or None without torch."""
    fn = torch_step_fn(L, batch, dtype, device, threads)
    return None if fn is None else harness.best_time(fn, repeat=3, min_time=1.0)


def interleaved(fns: dict, xp, rounds: int, min_time: float) -> dict:
    """Seconds per call of each function of ``fns``, measured in ``rounds`` rounds that run
    every function in turn (enough calls for ``min_time`` each; one warm-up call first): the
    per-round times of every function, so that load from other processes hits all alike."""
    calls = {}
    for name, fn in fns.items():
        fn()
        harness.synchronize(xp)
        n = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            harness.synchronize(xp)
            if time.perf_counter() - t0 >= min_time / 2 or n >= 1 << 12:
                break
            n *= 2
        calls[name] = max(1, int(round(n * min_time / max(time.perf_counter() - t0, 1e-9))))
    out = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            harness.synchronize(xp)
            out[name].append((time.perf_counter() - t0) / calls[name])
    return out


def cmd_step(args) -> None:
    xp = namespace_by_name(args.backend)
    lat = Lattice((args.L, args.L))
    action = Phi4Action(lat, "standard", m2=-4.0, lam=8.0)
    threads = _threads()
    device = "cuda" if args.backend == "cupy" else "cpu"
    load_start = os.getloadavg()
    rows = []
    for batch in args.batch:
        for dtype in ("float32", "float64"):
            flow = make_phi4_flow(lat.shape, xp, **TUTORIAL, dtype=getattr(xp, dtype))
            tr = FlowTrainer(flow, action, Adam(1e-3), batch_size=batch, dtype=dtype)
            fns = {"lattice_ml": tr.step}
            tfn = torch_step_fn(args.L, batch, dtype, device, threads)
            if tfn is not None:
                fns["torch"] = tfn
            t = interleaved(fns, xp, args.rounds, args.min_time)
            ours = np.array(t["lattice_ml"])
            row = {"L": args.L, "batch": batch, "dtype": dtype, "backend": args.backend,
                   "threads": threads, "rounds": args.rounds,
                   "lattice_ml_step_s": float(np.median(ours)),
                   "lattice_ml_step_min_s": float(ours.min()),
                   "lattice_ml_step_max_s": float(ours.max()),
                   "lattice_ml_rounds_s": ours.tolist(),
                   "torch": "not installed" if tfn is None else "autograd"}
            if tfn is not None:
                tt = np.array(t["torch"])
                ratio = ours / tt
                row.update({"torch_step_s": float(np.median(tt)),
                            "torch_step_min_s": float(tt.min()),
                            "torch_step_max_s": float(tt.max()), "torch_rounds_s": tt.tolist(),
                            "ratio_lattice_ml_over_torch": float(np.median(ratio)),
                            "ratio_of_minima": float(ours.min() / tt.min()),
                            "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max())})
            rows.append(row)
            harness.print_table([row], ["batch", "dtype", "threads", "lattice_ml_step_s",
                                        "torch_step_s", "ratio_lattice_ml_over_torch",
                                        "ratio_min", "ratio_max", "ratio_of_minima"])
    env = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                                           "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    path = harness.record("flows-step", rows, args.backend, extra={
        "threads": threads, "thread_environment": env,
        "load_average_1min_start_end": [load_start[0], os.getloadavg()[0]],
        "note": "ours and torch interleaved round by round on a CPU shared with other "
                "processes; the per-round ratios carry the spread"})
    print(f"# written {path}")


def tau_cost(hist_abs_m, seconds_per_update):
    r = gamma_method(np.stack(hist_abs_m, axis=1))
    return r.tau_int, seconds_per_update * 2 * r.tau_int, r.value, r.error


def cmd_scaling(args) -> None:
    xp = namespace_by_name("numpy")
    rows = []
    for L in args.L:
        lat = Lattice((L, L))
        action = Phi4Action(lat, "hopping", beta=0.5, lam=0.5)
        abs_m = lambda x: to_numpy(xp.abs(xp.mean(x, axis=(1, 2))))  # noqa: E731
        flow = make_phi4_flow(lat.shape, xp, n_layers=args.layers, hidden=args.hidden,
                              seed=L, dtype=xp.float32)
        tr = FlowTrainer(flow, action, Adam(cosine_decay(args.lr, args.train_steps, 1e-5)),
                         batch_size=64, seed=L, max_grad_norm=100.0, dtype="float32")
        t0 = time.perf_counter()
        tr.train(args.train_steps)
        t_train = time.perf_counter() - t0
        row = {"L": L, "train_steps": args.train_steps, "train_seconds": t_train,
               "batch_ess_last_50": float(np.nanmean(tr.history["ess"][-50:]))}
        # flow Metropolis
        fm = FlowMetropolis(flow, action)
        rng = RandomStreams(1000 + L, args.chains, xp, dtype="float32")
        state = fm.init(rng)
        t0 = time.perf_counter()
        state, hist = fm.run(rng, args.n_updates, {"abs_m": abs_m}, state)
        dt = (time.perf_counter() - t0) / (args.n_updates * args.chains)
        tau, cost, val, err = tau_cost(hist["abs_m"], dt)
        s = fm.summary(hist)
        row.update({"flow_mcmc_acceptance": s["acceptance"], "flow_mcmc_ess": s["ess"],
                    "flow_mcmc_tau_abs_m": tau, "flow_mcmc_s_per_update": dt,
                    "flow_mcmc_cost_per_indep_s": cost, "flow_mcmc_abs_m": [val, err]})
        # flow HMC and HMC, both float64 fields
        for name, sampler, to_x in (
                ("flow_hmc", FlowHMC(flow, action, n_steps=args.hmc_steps, tau=1.0,
                                     tau_jitter=0.2), None),
                ("hmc", HMC([Level([action], args.hmc_steps, "omelyan")], EuclideanSpace(),
                            tau=1.0, tau_jitter=0.2), None)):
            rng = RandomStreams(2000 + L, args.chains, xp, dtype="float32")
            field = rng.normal(lat.shape) * (1.0 if name == "flow_hmc" else 0.5)
            for _ in range(args.n_therm):
                field, _ = sampler.step(field, rng)
            hist, acc = [], []
            t0 = time.perf_counter()
            for _ in range(args.n_updates):
                field, info = sampler.step(field, rng)
                acc.append(to_numpy(info.accepted))
                hist.append(abs_m(sampler.to_field(field) if name == "flow_hmc" else field))
            dt = (time.perf_counter() - t0) / (args.n_updates * args.chains)
            tau, cost, val, err = tau_cost(hist, dt)
            row.update({f"{name}_acceptance": float(np.mean(acc)), f"{name}_tau_abs_m": tau,
                        f"{name}_s_per_update": dt, f"{name}_cost_per_indep_s": cost,
                        f"{name}_abs_m": [val, err]})
        row["cost_ratio_hmc_over_flow_mcmc"] = row["hmc_cost_per_indep_s"] / \
            row["flow_mcmc_cost_per_indep_s"]
        row["cost_ratio_hmc_over_flow_hmc"] = row["hmc_cost_per_indep_s"] / \
            row["flow_hmc_cost_per_indep_s"]
        rows.append(row)
        harness.print_table([row], ["L", "train_seconds", "flow_mcmc_acceptance",
                                    "flow_mcmc_tau_abs_m", "flow_hmc_acceptance",
                                    "flow_hmc_tau_abs_m", "hmc_acceptance", "hmc_tau_abs_m",
                                    "cost_ratio_hmc_over_flow_mcmc",
                                    "cost_ratio_hmc_over_flow_hmc"])
    path = harness.record("flows-scaling", rows, "numpy", extra={"parameters": {
        "form": "hopping", "beta": 0.5, "lam": 0.5, "layers": args.layers, "hidden": args.hidden,
        "lr": args.lr, "chains": args.chains, "n_updates": args.n_updates,
        "n_therm": args.n_therm, "hmc_steps": args.hmc_steps}})
    print(f"# written {path}")


def load_flow(path, lat, xp, layers, hidden, kernel, dtype):
    """A flow of the given architecture with the parameters saved by ``train`` (``.npz``)."""
    flow = make_phi4_flow(lat.shape, xp, n_layers=layers, hidden=hidden, kernel=kernel,
                          dtype=dtype)
    host: dict = {}
    with np.load(path) as data:
        for key in data.files:
            node = host
            *parents, leaf = key.split("/")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = data[key]
    flow.load_params(host)
    return flow


def cmd_compare(args) -> None:
    """Flow Metropolis with a trained flow against HMC: <|M|>, chi_2 = V <M^2>, tau_int."""
    xp = namespace_by_name("numpy")
    lat = Lattice((args.L, args.L))
    V = lat.volume
    action = Phi4Action(lat, "standard", m2=args.m2, lam=args.lam)
    flow = load_flow(args.params, lat, xp, args.layers, args.hidden, args.kernel, xp.float32)
    mag = lambda x: to_numpy(xp.mean(x, axis=(1, 2))).astype(np.float64)  # noqa: E731
    rows = []

    def analyse(name, ms, seconds, acc, updates):
        M = np.stack(ms, axis=1)[:, args.n_therm:]
        absm = gamma_method(np.abs(M))
        chi = gamma_method(M * M)
        rows.append({"sampler": name, "acceptance": acc, "abs_m": absm.value,
                     "abs_m_err": absm.error, "tau_abs_m": absm.tau_int,
                     "chi2": V * chi.value, "chi2_err": V * chi.error, "tau_chi2": chi.tau_int,
                     "seconds": seconds, "updates_per_chain": updates,
                     "s_per_update_chain": seconds / (updates * args.chains),
                     "cost_per_indep_abs_m_s": seconds / (updates * args.chains) * 2 *
                     absm.tau_int})

    fm = FlowMetropolis(flow, action)
    rng = RandomStreams(7, args.chains, xp, dtype="float32")
    t0 = time.perf_counter()
    _, hist = fm.run(rng, args.n_updates, {"m": mag})
    analyse("flow_mcmc", hist["m"], time.perf_counter() - t0, fm.summary(hist)["acceptance"],
            args.n_updates)
    hmc = HMC([Level([action], args.hmc_steps, "omelyan")], EuclideanSpace(), tau=1.0,
              tau_jitter=0.2)
    rng = RandomStreams(8, args.chains, xp)
    phi = rng.normal(lat.shape) * 0.5
    ms, acc = [], []
    t0 = time.perf_counter()
    for _ in range(args.n_updates):
        phi, info = hmc.step(phi, rng)
        acc.append(to_numpy(info.accepted))
        ms.append(mag(phi))
    analyse("hmc", ms, time.perf_counter() - t0, float(np.mean(acc)), args.n_updates)
    harness.print_table(rows, ["sampler", "acceptance", "abs_m", "abs_m_err", "tau_abs_m",
                               "chi2", "chi2_err", "tau_chi2", "cost_per_indep_abs_m_s"])
    path = harness.record("flows-compare", rows, "numpy", extra={"parameters": {
        "L": args.L, "m2": args.m2, "lam": args.lam, "params": str(args.params),
        "chains": args.chains, "n_updates": args.n_updates, "n_therm": args.n_therm,
        "hmc": f"omelyan, {args.hmc_steps} steps, tau = 1, jitter 0.2"}})
    print(f"# written {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--L", type=int, default=8)
    t.add_argument("--m2", type=float, default=-4.0)
    t.add_argument("--lam", type=float, default=8.0)
    t.add_argument("--layers", type=int, default=TUTORIAL["n_layers"])
    t.add_argument("--hidden", type=int, nargs="+", default=TUTORIAL["hidden"])
    t.add_argument("--kernel", type=int, default=TUTORIAL["kernel"])
    t.add_argument("--steps", type=int, default=2500)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--cosine", action="store_true", help="cosine decay of lr to --lr-min")
    t.add_argument("--lr-min", type=float, default=1e-5)
    t.add_argument("--clip", type=float, default=None)
    t.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--ess-samples", type=int, default=8192)
    t.add_argument("--chain-steps", type=int, default=128)
    t.add_argument("--print-every", type=int, default=100)
    s = sub.add_parser("step")
    s.add_argument("--L", type=int, default=8)
    s.add_argument("--batch", type=int, nargs="+", default=[64, 1024])
    s.add_argument("--rounds", type=int, default=7,
                   help="interleaved rounds (ours, torch, ours, ...); medians and spread")
    s.add_argument("--min-time", type=float, default=1.0, help="seconds per round and side")
    s.add_argument("--backend", default="numpy", choices=["numpy", "cupy"],
                   help="cupy: our step on the GPU against PyTorch on cuda")
    m = sub.add_parser("compare")
    m.add_argument("params", help="parameters (.npz) written by `train`")
    m.add_argument("--L", type=int, default=8)
    m.add_argument("--m2", type=float, default=-4.0)
    m.add_argument("--lam", type=float, default=8.0)
    m.add_argument("--layers", type=int, default=TUTORIAL["n_layers"])
    m.add_argument("--hidden", type=int, nargs="+", default=TUTORIAL["hidden"])
    m.add_argument("--kernel", type=int, default=TUTORIAL["kernel"])
    m.add_argument("--chains", type=int, default=64)
    m.add_argument("--n-updates", type=int, default=300)
    m.add_argument("--n-therm", type=int, default=20)
    m.add_argument("--hmc-steps", type=int, default=6)
    c = sub.add_parser("scaling")
    c.add_argument("--L", type=int, nargs="+", default=[6, 8, 10, 12])
    c.add_argument("--layers", type=int, default=8)
    c.add_argument("--hidden", type=int, nargs="+", default=[8])
    c.add_argument("--lr", type=float, default=3e-3)
    c.add_argument("--train-steps", type=int, default=300)
    c.add_argument("--chains", type=int, default=16)
    c.add_argument("--n-updates", type=int, default=300)
    c.add_argument("--n-therm", type=int, default=30)
    c.add_argument("--hmc-steps", type=int, default=6)
    args = ap.parse_args(argv)
    {"train": cmd_train, "step": cmd_step, "compare": cmd_compare,
     "scaling": cmd_scaling}[args.cmd](args)


if __name__ == "__main__":
    main()
