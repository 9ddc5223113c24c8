"""Gauge-equivariant coupling flow for 2D U(1) (Kanwar et al. 2020; Albergo et al. tutorial,
arXiv:2101.08176): train by reverse KL on L x L at beta, then measure the ESS on fresh samples and
run flow independence Metropolis against the exact plaquette and topological susceptibility.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_u1_coupling.py --steps 8000 --lr 5e-3 --cosine \
        --batch-late 128 --batch-late-from 6000 --max-time 5400

(run C of docs/gauge_flows_coupling.md: ESS 0.47, acceptance 0.54 in 589 CPU s).

Topological freezing (16^2, beta = 6, docs/gauge_flows_coupling.md): train at L = 8, then
``--freezing`` applies the trained parameters unchanged (``--steps 0``) or fine-tuned on 16^2:

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_u1_coupling.py --L 8 --beta 6 --steps 3000 \
        --lr 5e-3 --cosine --batch-late 128 --batch-late-from 2250 --max-time 3000
    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_u1_coupling.py --freezing --L 16 --beta 6 \
        --init <L-8 run>.npz --steps 0 --chains 16 --updates 1000 --discard 100 \
        --hmc-updates 500 --ess-samples 4096

Second round (docs/gauge_flows_coupling.md): ``--init`` a record with ``--warmup`` to train on;
``--freezing --sample-dtype float32 --accept-check 300`` (float32 proposals, decisions checked
against float64), ``--hmc-updates`` (flow Metropolis also from the HMC configurations),
``--mix-hmc 1 --mix-updates 400``, ``--forward-kl 300`` (KL(p||q) on HMC configurations);
fresh samples report the single-plaquette marginal KL and neighbour correlations.

Defaults: L = 8, beta = 2 (the tutorial point, exact <Q^2> = 1.2393), the library's default
architecture (16 layers, conditioners [2, 8, 8, 7], kernel 3, six NCP components, the default
layer cycle; ``--n-mix 2 --schedule 0:0,1:0,0:1,1:1,0:2,1:2,0:3,1:3`` is the tutorial's), batch
64, float32, Adam, gradient clipping at norm 100. Writes ``benchmarks/results/u1_coupling-numpy-<stamp>.json`` (and the trained
parameters as ``.npz`` next to it).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import harness  # noqa: E402
from gauge_exact import u1_plaquette, u1_topological_susceptibility  # noqa: E402

from lattice_ml.backend import RandomStreams, namespace_by_name, to_numpy  # noqa: E402
from lattice_ml.flows.u1_coupling import make_u1_coupling_flow  # noqa: E402
from lattice_ml.gauge import GaugeAction  # noqa: E402
from lattice_ml.gauge.observables import average_plaquette, topological_charge_2d  # noqa: E402
from lattice_ml.optim import Adam, clip_by_global_norm, constant, cosine_decay, warmup  # noqa: E402
from lattice_ml.samplers.flow_mcmc import FlowMCMCState, FlowMetropolis  # noqa: E402
from lattice_ml.stats import effective_sample_size, gamma_method  # noqa: E402


def reverse_kl_step(flow, action, z, xp):
    """``(loss, grads, log_w)`` of ``<log q(U) + S(U)>`` for latent links ``z``."""
    B = z.shape[0]
    U, logJ, cache = flow.forward_cache(z)
    S = action.action(U)
    logq = flow.prior_log_prob(z) - logJ
    _, grads = flow.vjp(cache, -action.force(U) * (1.0 / B),
                        xp.full((B,), -1.0 / B, dtype=flow.dtype))
    return float(xp.mean(logq + S)), grads, np.asarray(to_numpy(-(S + logq)), dtype=np.float64)


def path_gradient_step(flow, action, z, xp):
    """As :func:`reverse_kl_step` with the path-gradient estimator (Roeder et al. 2017; Vaitl
    et al. 2022): the parameters move ``f_theta(z)`` only, the density ``log q`` is held fixed,
    ``grad = <d(log q + S)/dU, df/dtheta>``. ``d log q/dU`` is ``inverse_vjp`` on the forward
    caches (the inverse at ``U = f(z)`` has the forward's intermediates)."""
    B = z.shape[0]
    U, logJ, cache = flow.forward_cache(z)
    S = action.action(U)
    logq = flow.prior_log_prob(z) - logJ
    w = xp.full((B,), 1.0 / B, dtype=flow.dtype)
    glogq, _ = flow.inverse_vjp(cache, xp.zeros_like(z), w, need_params=False)
    _, grads = flow.vjp(cache, glogq - action.force(U) * (1.0 / B), xp.zeros_like(w))
    return float(xp.mean(logq + S)), grads, np.asarray(to_numpy(-(S + logq)), dtype=np.float64)


def train(flow, action, args, xp):
    sched = cosine_decay(args.lr, args.steps, args.lr_min) if args.cosine else constant(args.lr)
    if args.warmup:  # a resumed run: the Adam moments start from zero again
        sched = warmup(sched, args.warmup)
    opt = Adam(sched)
    rng = RandomStreams(args.seed, args.batch, xp, dtype=args.dtype)
    late = args.batch_late_from if args.batch_late else args.steps + 1
    rng_late = RandomStreams(args.seed + 3, args.batch_late, xp, dtype=args.dtype) \
        if args.batch_late else None
    hist = {"loss": [], "ess": [], "grad_norm": []}
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(1, args.steps + 1):
        z = flow.draw_latent(rng if step < late else rng_late)
        pg = args.path_gradient_from and step >= args.path_gradient_from
        loss, grads, log_w = (path_gradient_step if pg else reverse_kl_step)(flow, action, z, xp)
        grads, norm = clip_by_global_norm(grads, args.clip)
        if math.isfinite(loss) and math.isfinite(norm):
            flow.params = opt.step(flow.params, grads)
        hist["loss"].append(loss)
        hist["ess"].append(float(effective_sample_size(log_w)) if np.all(np.isfinite(log_w))
                           else math.nan)
        hist["grad_norm"].append(float(norm))
        if step % 100 == 0:
            print(f"step {step:6d}  loss {np.mean(hist['loss'][-100:]):9.4f}  batch ESS "
                  f"{np.mean(hist['ess'][-100:]):.3f}  lr {sched(step):.2e}  "
                  f"{time.perf_counter() - t0:7.1f} s wall {time.process_time() - c0:7.1f} s CPU",
                  flush=True)
        if time.perf_counter() - t0 > args.max_time:
            print(f"time limit {args.max_time} s reached after {step} steps", flush=True)
            break
    return hist, time.perf_counter() - t0, time.process_time() - c0


def fresh_ess(flow, action, n, batch, seed, xp, dtype, with_loss=False):
    """ESS per configuration of ``n`` fresh samples (and, ``with_loss``, the reverse-KL loss
    ``<log q + S>`` on them, ``KL(q||p) - ln Z``)."""
    rng = RandomStreams(seed, batch, xp, dtype=dtype)
    lw = []
    for _ in range(n // batch):
        U, logq = flow.sample(rng)
        lw.append(np.asarray(to_numpy(-action.action(U) - logq), dtype=np.float64))
    lw = np.concatenate(lw)
    ess = float(effective_sample_size(lw))
    return (ess, float(-np.mean(lw))) if with_loss else ess


def plaquette_marginal(beta, V, P):
    """Exact density of one plaquette angle on a torus of ``V`` plaquettes at ``P`` (w.r.t.
    dP): ``exp(beta cos P) sum_n I_n(beta)^(V-1) e^{i n P}``, normalised (the plaquettes are
    independent up to ``sum_x P_x = 2 pi Q``, tests/gauge_exact.py)."""
    from scipy.special import ive

    n = np.arange(1, 40)
    r = (ive(n, beta) / ive(0, beta)) ** (V - 1)
    f = np.exp(beta * (np.cos(P) - 1.0)) * (1.0 + 2.0 * np.sum(
        r[:, None] * np.cos(n[:, None] * P[None, :]), axis=0))
    grid = np.linspace(-math.pi, math.pi, 20001)
    fg = np.exp(beta * (np.cos(grid) - 1.0)) * (1.0 + 2.0 * np.sum(
        r[:, None] * np.cos(n[:, None] * grid[None, :]), axis=0))
    return f / np.trapezoid(fg, grid)


def marginal_kl(flow, beta, n, batch, seed, xp, dtype, bins=128):
    """Sum over the lattice of the single-plaquette KL divergences ``KL(q_x || p_x)`` of ``n``
    fresh flow samples against the exact marginal (:func:`plaquette_marginal`): histograms with
    ``bins`` bins, the plaquettes pooled by the flow's translation symmetry (sites mod 4),
    the Miller-Madow bias ``(bins_used - 1) / (2 N)`` subtracted. For a product target
    ``KL(q||p) = sum_x KL(q_x||p_x) + (total correlation of q)``, so the rest of the KL is
    what the flow's plaquettes are correlated; on a torus the target is a product up to the one
    constraint ``sum_x P_x = 2 pi Q``. Also the correlation coefficients of the plaquette angles
    at the displacements (1,0), (0,1), (1,1), (1,-1), (2,0), (0,2) and the mutual information
    of those pairs summed over the lattice in the Gaussian approximation, ``V sum_d
    -ln(1 - r_d^2) / 2`` (a rough scale for the correlation part of the KL)."""
    from lattice_ml.flows.u1_coupling import u1_plaquette_angles

    rng = RandomStreams(seed, batch, xp, dtype=dtype)
    Ps = []
    for _ in range(n // batch):
        U, _ = flow.sample(rng)
        theta = np.angle(np.asarray(to_numpy(U))[..., 0, 0]).astype(np.float64)
        Ps.append(np.asarray(u1_plaquette_angles(theta)))
    P = np.concatenate(Ps)                                  # [n, L0, L1]
    L0, L1 = P.shape[1:]
    V = L0 * L1
    edges = np.linspace(-math.pi, math.pi, bins + 1)
    # exact bin probabilities by the trapezoid rule on a 64x finer grid
    fine = np.linspace(-math.pi, math.pi, 64 * bins + 1)
    pex = plaquette_marginal(beta, V, fine)
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (pex[1:] + pex[:-1]) * np.diff(fine))])
    pbin = np.diff(cum[::64])
    total, bias = 0.0, 0.0
    for a in range(4):
        for b in range(4):
            x = P[:, a::4, b::4].ravel()
            cnt, _ = np.histogram(x, edges)
            q = cnt / cnt.sum()
            m = q > 0
            kl = float(np.sum(q[m] * np.log(q[m] / pbin[m])))
            bb = (int(m.sum()) - 1) / (2 * cnt.sum())
            k = (L0 // 4) * (L1 // 4)                              # sites in this class
            total += k * (kl - bb)
            bias += k * bb
    # correlation coefficients of the plaquette angles at displacements d (pooled over sites;
    # under p they are O(1/V), from the one global constraint)
    Pc = P - P.mean(axis=0)
    var = np.mean(Pc * Pc)
    corr = {f"{d0},{d1}": float(np.mean(Pc * np.roll(Pc, (-d0, -d1), axis=(1, 2))) / var)
            for d0, d1 in ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2))}
    gauss = float(V * sum(-0.5 * math.log(1.0 - r * r) for r in corr.values()))
    return {"marginal_kl_sum": total, "miller_madow_subtracted": bias, "bins": bins,
            "samples": int(P.shape[0]), "neighbour_correlations": corr,
            "pair_information_gaussian": gauss}


def metropolis(flow, action, args, xp, V):
    sampler = FlowMetropolis(flow, action)
    rng = RandomStreams(args.seed + 2, args.chains, xp, dtype=args.dtype)
    t0 = time.perf_counter()
    _, hist = sampler.run(rng, args.updates, {"plaquette": average_plaquette,
                                              "Q": topological_charge_2d})
    wall = time.perf_counter() - t0
    summ = sampler.summary(hist)
    d = args.discard
    P = np.stack([to_numpy(a) for a in hist["plaquette"]], axis=1)[:, d:].astype(np.float64)
    Q = np.stack([to_numpy(a) for a in hist["Q"]], axis=1)[:, d:].astype(np.float64)
    Q = np.round(Q)  # the geometric charge is an integer up to round-off
    rp, rq = gamma_method(P), gamma_method(Q * Q / V)
    return summ, rp, rq, wall


def _charge_stats(hist, discard, V):
    """Gamma-method analysis of a run's ``"Q"`` and ``"plaquette"`` histories (first ``discard``
    updates dropped): tau_int(Q), <Q^2>, chi_t and the plaquette."""
    P = np.stack([to_numpy(a) for a in hist["plaquette"]], axis=1)[:, discard:]
    Q = np.round(np.stack([to_numpy(a) for a in hist["Q"]], axis=1)[:, discard:]
                 .astype(np.float64))
    rq, rq2, rp = gamma_method(Q), gamma_method(Q * Q), gamma_method(P.astype(np.float64))
    return {"tau_int_Q": rq.tau_int, "tau_int_Q_error": rq.tau_int_error,
            "Q2": rq2.value, "Q2_error": rq2.error, "tau_int_Q2": rq2.tau_int,
            "chi_t": rq2.value / V, "chi_t_error": rq2.error / V,
            "plaquette": rp.value, "plaquette_error": rp.error, "tau_int_plaquette": rp.tau_int,
            "Q_changes_per_update": float(np.mean(np.abs(np.diff(Q, axis=1)) > 0))}


def _hmc(action, args):
    """HMC as in the HMC row of docs/gauge_flows.md: tau = 1 (jitter 0.2), Omelyan."""
    from lattice_ml.samplers.hmc import HMC
    from lattice_ml.samplers.integrators import Level
    from lattice_ml.samplers.spaces import LieGroupSpace

    return HMC([Level([action], args.hmc_steps, "omelyan")], LieGroupSpace(1), tau=1.0,
               tau_jitter=0.2)


def forward_kl(flow, action, args, xp, V):
    """``KL(p||q) = <log w>_p - ln Z`` (``ln Z = ln sum_n I_n(beta)^V``, exact) on HMC
    configurations: ``args.chains`` chains from a cold start, ``log w`` every 20 trajectories
    from trajectory 100 to ``args.forward_kl``; also the spread of ``log w`` under p."""
    from scipy.special import ive, logsumexp

    from lattice_ml.groups import random_near_identity

    n = np.arange(-40, 41)
    lnZ = float(V * args.beta + logsumexp(V * np.log(ive(n, args.beta))))
    hmc, fm = _hmc(action, args), FlowMetropolis(flow, action)
    rng = RandomStreams(21, args.chains, xp)
    U = random_near_identity(rng, (2, args.L, args.L), 1, 0.0)
    lw = []
    for t in range(args.forward_kl):
        U, _ = hmc.step(U, rng)
        if t >= 100 and t % 20 == 0:
            lw.append(np.asarray(to_numpy(fm.log_weight(U)), dtype=np.float64))
    lw = np.stack(lw)                                     # [measurements, chains]
    err = float(np.std(lw.mean(axis=0), ddof=1) / math.sqrt(lw.shape[1]))  # from chain means
    return {"sampler": "forward KL on HMC configurations", "ln_Z": lnZ,
            "kl_p_q": float(lw.mean() - lnZ), "kl_p_q_error": err,
            "log_w_std_under_p": float(lw.std()), "configurations": int(lw.size),
            "trajectories": args.forward_kl}


def accept_check(flow32, flow64, action, n, chains, seed, xp):
    """Flow Metropolis decisions with float32 proposals against float64: ``n`` updates of
    ``chains`` chains, the same latent links (drawn in float32, cast) and uniforms for both
    precisions, each chain carrying its own log-weight. Returns the number of differing accept
    decisions, the largest ``|log w_32 - log w_64|`` of a proposal, and both acceptances."""
    rng = RandomStreams(seed, chains, xp, dtype="float32")
    cur32 = cur64 = None
    n_diff, max_dlw, acc32, acc64 = 0, 0.0, 0, 0
    for _ in range(n):
        z = flow32.draw_latent(rng)
        U32, lj32 = flow32.forward(z)
        U64, lj64 = flow64.forward(xp.astype(z, xp.complex128))
        lw32 = np.asarray(to_numpy(-action.action(U32) + lj32), dtype=np.float64)
        lw64 = np.asarray(to_numpy(-action.action(U64) + lj64), dtype=np.float64)
        logu = np.log(np.asarray(to_numpy(rng.uniform(())), dtype=np.float64))
        max_dlw = max(max_dlw, float(np.max(np.abs(lw32 - lw64))))
        if cur32 is None:
            cur32, cur64 = lw32, lw64
            continue
        a32, a64 = logu < lw32 - cur32, logu < lw64 - cur64
        n_diff += int(np.sum(a32 != a64))
        acc32, acc64 = acc32 + int(a32.sum()), acc64 + int(a64.sum())
        cur32, cur64 = np.where(a32, lw32, cur32), np.where(a64, lw64, cur64)
    m = (n - 1) * chains
    return {"updates": n - 1, "chains": chains, "differing_decisions": n_diff,
            "max_abs_log_w_difference": max_dlw, "acceptance_float32": acc32 / m,
            "acceptance_float64": acc64 / m}


def freezing(flow, action, args, xp, V, flow_sample=None):
    """Topological freezing at ``L x L``: the fresh-sample ESS, loss and plaquette marginals;
    optionally the float32/float64 accept check; a short HMC run (cold start, float64, as the
    HMC row of docs/gauge_flows.md) for the CPU time per trajectory on the same machine; flow
    Metropolis (proposals from ``flow_sample``, default ``flow``) from a flow start and, after
    an HMC run, from its last configurations; optionally the flow/HMC mixture (from the HMC
    configurations if there are any) and flow HMC (float64, ``flow``). Cost per independent Q = 2 tau_int(Q) x CPU s per update of one
    chain."""
    from lattice_ml.samplers.flow_hmc import FlowHMC
    from lattice_ml.samplers.flow_mixture import FlowHMCMixture

    flow_sample = flow_sample or flow
    sdtype = "float32" if flow_sample.dtype == xp.float32 else "float64"
    obs = {"plaquette": average_plaquette, "Q": topological_charge_2d}
    ess, loss = fresh_ess(flow_sample, action, args.ess_samples, 256, args.seed + 1, xp, sdtype,
                          with_loss=True)
    print(f"ESS (fresh, {args.ess_samples}) {ess:.4f}, loss {loss:.2f}", flush=True)
    mkl = marginal_kl(flow_sample, args.beta, args.ess_samples, 256, args.seed + 6, xp, sdtype)
    print(f"single-plaquette marginal KL summed over the lattice {mkl['marginal_kl_sum']:.3f}",
          flush=True)
    rows = [{"sampler": "fresh samples", "ess": ess, "loss": loss, "dtype": sdtype, **mkl}]
    U_hmc = None
    if args.accept_check and flow_sample is not flow:
        c0 = time.process_time()
        chk = accept_check(flow_sample, flow, action, args.accept_check, args.chains,
                           args.seed + 4, xp)
        rows.append({"sampler": "accept check float32 vs float64", **chk,
                     "cpu_s": time.process_time() - c0})
        print(rows[-1], flush=True)
    if args.forward_kl:
        rows.append(forward_kl(flow, action, args, xp, V))
        print(rows[-1], flush=True)
    if args.hmc_updates:
        from lattice_ml.groups import random_near_identity

        hmc = _hmc(action, args)
        rng = RandomStreams(11, args.chains, xp)
        U = random_near_identity(rng, (2, args.L, args.L), 1, 0.0)
        hist = {"plaquette": [], "Q": []}
        acc = []
        c0 = time.process_time()
        for _ in range(args.hmc_updates):
            U, info = hmc.step(U, rng)
            acc.append(to_numpy(info.accepted))
            for k, f in obs.items():
                hist[k].append(f(U))
        cpu = (time.process_time() - c0) / (args.hmc_updates * args.chains)
        row = {"sampler": "hmc", "chains": args.chains, "updates": args.hmc_updates,
               "md_steps": args.hmc_steps, "integrator": "omelyan", "tau": 1.0,
               "tau_jitter": 0.2, "start": "cold", "dtype": "float64",
               "acceptance": float(np.mean(acc)), "cpu_s_per_update": cpu,
               **_charge_stats(hist, min(args.discard, args.hmc_updates // 4), V)}
        rows.append(row)
        print(row, flush=True)
        U_hmc = U
    samplers = [("flow_metropolis", FlowMetropolis(flow_sample, action), 0, sdtype,
                 args.updates, {})]
    if U_hmc is not None:
        # the same chains started from the HMC run's last configurations (equilibrated at
        # short distances, in the charge sectors HMC left them): with the flow start, which
        # begins at flow-typical weights, a check that the chains are in equilibrium
        fm = FlowMetropolis(flow_sample, action)
        cdt = xp.complex64 if sdtype == "float32" else xp.complex128
        U0 = xp.astype(U_hmc, cdt)
        samplers.append(("flow_metropolis (HMC start)", fm, 0, sdtype, args.updates,
                         {"state": FlowMCMCState(U0, fm.log_weight(U0))}))
    if args.mix_hmc:
        hmc = _hmc(action, args)
        samplers.append((f"flow_metropolis+{args.mix_hmc}hmc",
                         FlowHMCMixture(flow, action, hmc, args.mix_hmc), args.mix_hmc,
                         "float64", args.mix_updates or args.updates,
                         {} if U_hmc is None else {"x": U_hmc}))  # HMC start if there is one
    for k, (name, sampler, n_hmc, dt, n_up, start) in enumerate(samplers):
        rng = RandomStreams(args.seed + 2 + 10 * k, args.chains, xp, dtype=dt)
        c0 = time.process_time()
        _, hist = sampler.run(rng, n_up, obs, **start)
        cpu = (time.process_time() - c0) / (n_up * args.chains)
        d = min(args.discard, n_up // 4)
        row = {"sampler": name, "chains": args.chains, "updates": n_up,
               "start": "hmc" if start else "flow", "discard": d, "hmc_per_update": n_hmc, "dtype": dt,
               **sampler.summary(hist), "cpu_s_per_update": cpu,
               **_charge_stats(hist, d, V)}
        row["acceptance_after_discard"] = float(np.mean(
            np.stack([to_numpy(a) for a in hist["accepted"][d:]]).astype(float)))
        row["cpu_s_per_independent_Q"] = 2 * row["tau_int_Q"] * cpu
        rows.append(row)
        print(row, flush=True)
    if args.flow_hmc_updates:
        # HMC in the latent links of the float64 flow, started from Haar latents (flow samples)
        fh = FlowHMC(flow, action, n_steps=args.flow_hmc_steps, tau=1.0, scheme="omelyan",
                     tau_jitter=0.2)
        rng = RandomStreams(args.seed + 5, args.chains, xp)
        z = flow.draw_latent(rng)
        hist = {"plaquette": [], "Q": []}
        acc = []
        c0 = time.process_time()
        for _ in range(args.flow_hmc_updates):
            z, info = fh.step(z, rng)
            acc.append(to_numpy(info.accepted))
            U = fh.to_field(z)
            for k, f in obs.items():
                hist[k].append(f(U))
        cpu = (time.process_time() - c0) / (args.flow_hmc_updates * args.chains)
        row = {"sampler": "flow_hmc", "chains": args.chains, "updates": args.flow_hmc_updates,
               "discard": args.discard, "md_steps": args.flow_hmc_steps,
               "integrator": "omelyan", "tau": 1.0, "tau_jitter": 0.2, "dtype": "float64",
               "acceptance": float(np.mean(acc)), "cpu_s_per_update": cpu,
               **_charge_stats(hist, args.discard, V)}
        row["cpu_s_per_independent_Q"] = 2 * row["tau_int_Q"] * cpu
        rows.append(row)
        print(row, flush=True)
    return ess, rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--L", type=int, default=8)
    ap.add_argument("--beta", type=float, default=2.0)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=str, default="8,8")
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--n-mix", type=int, default=6)
    ap.add_argument("--final-scale", type=float, default=1.0)
    ap.add_argument("--schedule", type=str, default="",
                    help="layer cycle as mu:off,mu:off,... (default: DEFAULT_SCHEDULE)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batch-late", type=int, default=0,
                    help="batch size from step --batch-late-from on (0: keep --batch)")
    ap.add_argument("--batch-late-from", type=int, default=0)
    ap.add_argument("--path-gradient-from", type=int, default=0,
                    help="path-gradient estimator from this step on (0: never)")
    ap.add_argument("--init", type=str, default="",
                    help="start from the parameters of a previous run's .npz")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-min", type=float, default=1e-5)
    ap.add_argument("--cosine", action="store_true")
    ap.add_argument("--warmup", type=int, default=0,
                    help="linear learning-rate warm-up over this many steps (for --init runs)")
    ap.add_argument("--clip", type=float, default=100.0)
    ap.add_argument("--max-time", type=float, default=1200.0, help="training wall-time cap (s)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ess-samples", type=int, default=8192)
    ap.add_argument("--chains", type=int, default=64)
    ap.add_argument("--updates", type=int, default=256)
    ap.add_argument("--discard", type=int, default=16)
    ap.add_argument("--freezing", action="store_true",
                    help="measure topological freezing at --L (tau_int(Q), CPU per independent "
                         "Q) instead of the L-8 evaluation; with --init and --steps 0 a flow "
                         "trained on another L is applied unchanged")
    ap.add_argument("--mix-hmc", type=int, default=0,
                    help="with --freezing: also run the flow/HMC mixture with this many HMC "
                         "trajectories per flow step")
    ap.add_argument("--hmc-updates", type=int, default=0,
                    help="with --freezing: a short HMC run (cold start) for its CPU per update")
    ap.add_argument("--hmc-steps", type=int, default=6)
    ap.add_argument("--mix-updates", type=int, default=0,
                    help="with --mix-hmc: updates of the mixture (0: --updates)")
    ap.add_argument("--sample-dtype", choices=("float32", "float64"), default="float64",
                    help="with --freezing: precision of the flow-Metropolis proposals (the "
                         "mixture, flow HMC and HMC run in float64)")
    ap.add_argument("--accept-check", type=int, default=0,
                    help="with --freezing --sample-dtype float32: replay this many updates "
                         "with float32 and float64 proposals and count differing decisions")
    ap.add_argument("--flow-hmc-updates", type=int, default=0,
                    help="with --freezing: flow HMC (latent links, float64) trajectories")
    ap.add_argument("--flow-hmc-steps", type=int, default=6)
    ap.add_argument("--forward-kl", type=int, default=0,
                    help="with --freezing: KL(p||q) on HMC configurations of this many "
                         "trajectories (cold start, measured every 20 from 100 on)")
    args = ap.parse_args(argv)

    xp = namespace_by_name("numpy")
    dtype = getattr(xp, args.dtype)
    shape = (args.L, args.L)
    V = args.L * args.L
    hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    schedule = [tuple(int(v) for v in p.split(":")) for p in args.schedule.split(",") if p] \
        or None
    flow = make_u1_coupling_flow(shape, xp, n_layers=args.layers, hidden=hidden,
                                 kernel=args.kernel, n_mix=args.n_mix,
                                 final_scale=args.final_scale, seed=args.seed, dtype=dtype,
                                 schedule=schedule)
    if args.init:
        flow.load_params(_unflat(np.load(args.init)))
    action = GaugeAction(args.beta, 1)
    print(f"{flow}: {flow.n_parameters} parameters", flush=True)
    hist, t_train, cpu_train = train(flow, action, args, xp)
    n_done = len(hist["loss"])
    if args.freezing:
        # measured in float64 (as the HMC row; HMC trajectories of the mixture on complex64
        # links drift off U(1) beyond the space's 1e-5 check): the trained parameters, cast
        flow64 = make_u1_coupling_flow(shape, xp, n_layers=args.layers, hidden=hidden,
                                       kernel=args.kernel, n_mix=args.n_mix, seed=args.seed,
                                       dtype=xp.float64, schedule=schedule)
        flow64.load_params(flow.params_to_host())
        flow_sample = flow64
        if args.sample_dtype == "float32":
            flow_sample = make_u1_coupling_flow(shape, xp, n_layers=args.layers, hidden=hidden,
                                                kernel=args.kernel, n_mix=args.n_mix,
                                                seed=args.seed, dtype=xp.float32,
                                                schedule=schedule)
            flow_sample.load_params(flow.params_to_host())
        train_dtype, args.dtype = args.dtype, "float64"
        ess, rows = freezing(flow64, action, args, xp, V, flow_sample)
        res = {"what": "freezing", "L": args.L, "beta": args.beta, "init": args.init,
               "n_layers": args.layers, "hidden": list(hidden), "n_mix": args.n_mix,
               "n_parameters": flow.n_parameters, "fine_tune_steps": n_done,
               "batch": args.batch, "lr": args.lr, "cosine": args.cosine,
               "train_dtype": train_dtype, "training_cpu_s": cpu_train, "training_wall_s": t_train,
               "final_loss_mean100": float(np.mean(hist["loss"][-100:])) if n_done else None,
               "history_every100": {k: [float(np.mean(v[i:i + 100]))
                                        for i in range(0, len(v), 100)]
                                    for k, v in hist.items()},
               "ess_fresh": ess, "ess_samples": args.ess_samples,
               "sample_dtype": args.sample_dtype,
               "exact_Q2": V * u1_topological_susceptibility(args.beta, V),
               "exact_plaquette": u1_plaquette(args.beta, V), "samplers": rows,
               "load_average": os.getloadavg(),
               "machine_note": "2-core shared sandbox CPU, OPENBLAS_NUM_THREADS=1"}
        path = harness.record("u1_coupling-freezing", [res], "numpy")
        if n_done:
            np.savez(path.with_suffix(".npz"), **{
                "/".join(k): v for k, v in _flat(flow.params_to_host())})
        print(f"wrote {path}")
        return
    ess, loss = fresh_ess(flow, action, args.ess_samples, 256, args.seed + 1, xp, args.dtype,
                          with_loss=True)
    mkl = marginal_kl(flow, args.beta, args.ess_samples, 256, args.seed + 6, xp, args.dtype)
    summ, rp, rq, t_mc = metropolis(flow, action, args, xp, V)
    exact_p = u1_plaquette(args.beta, V)
    exact_chi = u1_topological_susceptibility(args.beta, V)
    res = {
        "L": args.L, "beta": args.beta, "n_layers": args.layers, "hidden": list(hidden),
        "kernel": args.kernel, "n_mix": args.n_mix,
        "schedule": [[layer.mu, layer.off] for layer in flow.layers],
        "n_parameters": flow.n_parameters,
        "batch": args.batch, "batch_late": args.batch_late,
        "batch_late_from": args.batch_late_from, "dtype": args.dtype, "steps": n_done, "lr": args.lr,
        "path_gradient_from": args.path_gradient_from, "init": args.init,
        "cosine": args.cosine, "lr_min": args.lr_min, "clip": args.clip,
        "training_wall_s": t_train, "s_per_step": t_train / max(n_done, 1),
        "training_cpu_s": cpu_train, "load_average_after_training": os.getloadavg(),
        "final_loss_mean100": float(np.mean(hist["loss"][-100:])),
        "final_batch_ess_mean100": float(np.mean(hist["ess"][-100:])),
        "ess_fresh": ess, "ess_samples": args.ess_samples, "loss_fresh": loss,
        "plaquette_marginals": mkl,
        "metropolis": {"chains": args.chains, "updates": args.updates, "discard": args.discard,
                       "acceptance": summ["acceptance"], "proposal_ess": summ["ess"],
                       "wall_s": t_mc},
        "plaquette": {"mean": rp.value, "error": rp.error, "tau_int": rp.tau_int,
                      "exact": exact_p, "pull": (rp.value - exact_p) / rp.error},
        "chi_t": {"mean": rq.value, "error": rq.error, "tau_int": rq.tau_int,
                  "exact": exact_chi, "pull": (rq.value - exact_chi) / rq.error,
                  "Q2_mean": rq.value * V, "Q2_exact": exact_chi * V},
        "history_every100": {k: [float(np.mean(v[i:i + 100])) for i in range(0, len(v), 100)]
                             for k, v in hist.items()},
        "machine_note": "2-core shared sandbox CPU, OPENBLAS_NUM_THREADS=1 (one core effectively)",
    }
    path = harness.record("u1_coupling", [res], "numpy")
    np.savez(path.with_suffix(".npz"), **{
        "/".join(k): v for k, v in _flat(flow.params_to_host())})
    print(f"ESS (fresh, {args.ess_samples}) {ess:.3f}; Metropolis acceptance "
          f"{summ['acceptance']:.3f}; plaquette {rp.value:.5f}({rp.error:.5f}) exact "
          f"{exact_p:.5f}; chi_t {rq.value:.5f}({rq.error:.5f}) exact {exact_chi:.5f}; "
          f"training {t_train:.0f} s wall ({cpu_train:.0f} s CPU) for {n_done} steps; "
          f"{flow.n_parameters} parameters")
    print(f"wrote {path}")


def _flat(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, prefix + (k,))
        else:
            yield prefix + (k,), v



def _unflat(npz):
    tree = {}
    for key in npz.files:
        *path, leaf = key.split("/")
        node = tree
        for k in path:
            node = node.setdefault(k, {})
        node[leaf] = npz[key]
    return tree


if __name__ == "__main__":
    main()
