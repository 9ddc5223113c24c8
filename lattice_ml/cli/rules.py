"""Cross-key rules of the ``lattice-ml`` configuration: combinations that are invalid together.

Each rule is a function ``check(config)`` of the whole resolved configuration (every key present
with its schema type) that raises :class:`~lattice_ml.cli.errors.ConfigError` naming the key to
change. The schema attaches each rule to the table or variant whose keys it is about
(``Table.checks`` in :mod:`lattice_ml.cli.schema`); :func:`lattice_ml.cli.config.validate_config`
runs the rules of every table and chosen variant after the single-key checks, so
``lattice-ml config`` (the dry run) refuses exactly what ``lattice-ml run`` would refuse, before
anything is written.

Rules that look outside the configuration (the run's start file, the array library, the
``LATTICE_ML_KERNELS`` variable) are here too: they are as much part of "can this run start"
as a range check.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ConfigError

__all__ = ["GAUGE_N", "gauge_N", "dimension", "has_fermions", "min_samples", "check_backend",
           "check_kernel_mode", "read_start_links", "flow_kind", "flow_loops", "slhmc_rules",
           "GRADIENT_FLOW_LOOPS"]

GAUGE_N = {"u1": 1, "su2": 2, "su3": 3, "schwinger": 1}
"""Colours of the gauge group of each gauge theory name (``suN`` reads ``theory.N``)."""


def gauge_N(config: dict) -> int | None:
    """N of the links (1 for U(1)), ``None`` for φ⁴ (no links)."""
    th = config["theory"]
    if th["name"] == "phi4":
        return None
    return int(th["N"]) if th["name"] == "suN" else GAUGE_N[th["name"]]


def dimension(config: dict) -> int:
    return len(config["lattice"]["shape"])


def has_fermions(config: dict) -> bool:
    return config["theory"].get("fermion", "none") != "none"


def min_samples() -> int:
    """Fewest measurements per chain that the Γ-method analysis of the summary accepts."""
    from ..stats.gamma import MIN_SAMPLES

    return MIN_SAMPLES


# ------------------------------------------------------------------------------------------
# [theory]
# ------------------------------------------------------------------------------------------
def phi4_rules(c: dict) -> None:
    if c["sampler"]["name"] == "heatbath":
        raise ConfigError("sampler.name", "the heatbath updates gauge links; φ⁴ is sampled "
                          "with sampler.name = 'hmc', 'flow' or 'flow_hmc'")
    if c["run"]["start_file"]:
        raise ConfigError("run.start_file", "φ⁴ has no gauge links to start from; a start file "
                          "is for gauge theories (set run.start_file = \"\")")
    if c["output"]["save_every"] and c["output"]["format"] != "hdf5":
        raise ConfigError("output.format", f"φ⁴ fields are saved as HDF5 ensembles; "
                          f"{c['output']['format']!r} files hold gauge links "
                          "(set output.format = 'hdf5')")
    for key in ("clover_charge", "wilson_flow"):
        if c["measure"][key]:
            raise ConfigError(f"measure.{key}", "is a gauge-field measurement; φ⁴ has no links")
    if c["measure"]["wilson_loops"]:
        raise ConfigError("measure.wilson_loops", "is a gauge-field measurement; φ⁴ has no links")


def gauge_rules(c: dict) -> None:
    """Pure gauge theories and the gauge part of the theories with fermions."""
    th, sm = c["theory"], c["sampler"]
    fermions = has_fermions(c)
    if sm["name"] in ("flow", "flow_hmc") and fermions:
        raise ConfigError("sampler.name", f"the flow samplers are implemented for φ⁴ and pure "
                          f"gauge theories, not with fermions ({th['name']!r}, fermion = "
                          f"{th['fermion']!r}); use 'hmc'")
    if sm["name"] == "heatbath":
        if fermions:
            raise ConfigError("sampler.name", "dynamical fermions need sampler.name = 'hmc' or "
                              "'slhmc' (the heatbath samples the pure gauge action)")
        if th.get("action", "wilson") != "wilson":
            raise ConfigError("theory.action", "the heatbath needs theory.action = 'wilson' "
                              f"(rectangles couple links of one parity), not {th['action']!r}")
    if sm["name"] in ("hmc", "slhmc") and sm["fine_steps"] and not fermions \
            and th.get("action", "wilson") == "wilson":
        raise ConfigError("sampler.fine_steps", "two time scales split the improved action into "
                          "rectangles (outer) and plaquettes (inner), or fermions (outer) and "
                          "gauge (inner); the pure Wilson action has neither: set "
                          "fine_steps = 0")
    N, D = gauge_N(c), dimension(c)
    fmt = c["output"]["format"]
    if c["output"]["save_every"] and fmt != "hdf5" and not (N == 3 and D == 4):
        raise ConfigError("output.format", f"{fmt!r} files hold 4D SU(3) links; this run has "
                          f"{'U(1)' if N == 1 else f'SU({N})'} in D = {D} "
                          "(set output.format = 'hdf5')")
    m = c["measure"]
    if m["clover_charge"] or m["wilson_flow"] or m["wilson_loops"]:
        n_meas = c["sampler"]["n_samples"] // m["every"]
        if n_meas < min_samples():
            raise ConfigError("measure.every", f"{c['sampler']['n_samples']} measurements with "
                              f"measure.every = {m['every']} give {n_meas} of the [measure] "
                              f"observables per chain; the Γ-method needs {min_samples()}")
    if m["wilson_flow"]:
        steps = m["flow_t_max"] / m["flow_eps"]
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            raise ConfigError("measure.flow_t_max", f"must be a multiple of measure.flow_eps = "
                              f"{m['flow_eps']:g}, got {m['flow_t_max']:g}")
    if m["clover_charge"] and D != 4:
        raise ConfigError("measure.clover_charge", "the clover charge is four-dimensional; in "
                          "2D U(1) the geometric charge is always measured")
    if m["wilson_loops"]:
        n, L = m["wilson_loops"], min(c["lattice"]["shape"])
        if 2 * n > L:
            raise ConfigError("measure.wilson_loops", f"loops up to R = T = {n} need every extent "
                              f">= {2 * n} (the shortest is {L})")


def fermion_rules(c: dict) -> None:
    th = c["theory"]
    if not has_fermions(c):
        return
    D = dimension(c)
    if th["fermion"] == "wilson" and th["nf"] % 2:
        raise ConfigError("theory.nf", "Wilson fermions are simulated in pairs (det D†D per "
                          f"pseudofermion field): nf must be even, got {th['nf']}")
    if th["fermion"] == "staggered" and D not in (2, 4):
        raise ConfigError("lattice.shape", "staggered flavours are counted in D = 2 or 4 "
                          f"(2^(D/2) tastes per field), not D = {D}")


def measure_rules(c: dict) -> None:
    """The all-mode-averaged chiral condensate (``measure.ama_sloppy``, ``ama_regression``)."""
    m, sm = c["measure"], c["sampler"]
    for key in ("ama_sloppy", "ama_regression"):
        if m[key] and not has_fermions(c):
            raise ConfigError(f"measure.{key}", "averages the chiral condensate: it needs "
                              "dynamical fermions (theory.fermion = 'wilson' or 'staggered')")
    if not (m["ama_sloppy"] or m["ama_regression"]):
        return
    blocks = sm["n_samples"] // m["every"]
    left = blocks - (m["ama_train"] if m["ama_regression"] else 0)
    if left < min_samples():
        what = (f" less measure.ama_train = {m['ama_train']} for the regression"
                if m["ama_regression"] else "")
        raise ConfigError("measure.ama_train" if m["ama_regression"] and blocks >= min_samples()
                          else "measure.every",
                          f"{sm['n_samples']} measurements with measure.every = {m['every']} "
                          f"give {blocks} exact condensate measurements per chain{what}: the "
                          f"AMA average needs {min_samples()} blocks")


def schwinger_rules(c: dict) -> None:
    shape = c["lattice"]["shape"]
    if len(shape) != 2:
        raise ConfigError("lattice.shape", "the Schwinger model is two-dimensional: give two "
                          f"extents, not {list(shape)}")


# ------------------------------------------------------------------------------------------
# [sampler], [flow]
# ------------------------------------------------------------------------------------------
def sampler_rules(c: dict) -> None:
    sm = c["sampler"]
    need = min_samples()
    if sm["n_samples"] < need:
        raise ConfigError("sampler.n_samples", f"the Γ-method analysis of the summary needs at "
                          f"least {need} measurements per chain, got {sm['n_samples']}")
    if sm.get("adapt_steps") and sm["min_acceptance"] >= sm["target_acceptance"]:
        raise ConfigError("sampler.min_acceptance", f"the floor {sm['min_acceptance']:g} must be "
                          f"below sampler.target_acceptance = {sm['target_acceptance']:g}")


GRADIENT_FLOW_LOOPS = ("plaquette", "rectangle", "chair", "polyakov")


def flow_kind(config: dict) -> str:
    """``flow.kind`` with ``auto`` resolved: ``coupling`` for φ⁴, ``gradient`` for gauge fields."""
    kind = config["flow"]["kind"]
    if kind == "auto":
        return "coupling" if config["theory"]["name"] == "phi4" else "gradient"
    return kind


def flow_loops(config: dict, table: str = "flow") -> tuple[str, ...]:
    """The loop types of ``flow.loops`` (or ``<table>.loops``, e.g. ``slhmc.loops``: the same
    names), comma- or space-separated. ``flow.loops`` also takes class functions of a loop
    type, ``<loop>:<function>`` (:mod:`lattice_ml.flows.loop_functions`, e.g.
    ``plaquette:re_tr2``)."""
    from ..flows.loop_functions import FUNCTIONS
    text = config[table]["loops"]
    key = f"{table}.loops"
    words = text.replace(",", " ").split()
    with_functions = table == "flow"
    loops = [w.split(":", 1)[0] if with_functions else w for w in words]
    funcs = [w.split(":", 1)[1] for w in words if with_functions and ":" in w]
    bad = [w for w in loops if w not in GRADIENT_FLOW_LOOPS]
    if bad or not words:
        extra = (", each optionally as <loop>:<function> with a function of "
                 f"{', '.join(FUNCTIONS)}") if with_functions else ""
        raise ConfigError(key, f"loop types are {', '.join(GRADIENT_FLOW_LOOPS)} "
                          f"(comma-separated{extra}), got {text!r}")
    bad = [f for f in funcs if f not in FUNCTIONS]
    if bad:
        raise ConfigError(key, f"loop functions are {', '.join(FUNCTIONS)}, got {bad[0]!r}")
    if "abs_tr_sq" in funcs and gauge_N(config) == 1:
        raise ConfigError(key, "|Tr W|^2 (abs_tr_sq) is constant for U(1): use re_tr2")
    if "chair" in loops and dimension(config) < 3:
        raise ConfigError(key, "chair loops need at least three dimensions")
    terms = [w[:-len(":re_tr")] if w.endswith(":re_tr") else w for w in words]
    if len(set(terms)) != len(terms):
        raise ConfigError(key, f"a loop type is named twice: {text!r}")
    return tuple(terms)


def slhmc_rules(c: dict) -> None:
    """``sampler.name = "slhmc"`` and its ``[slhmc]`` table."""
    if c["sampler"]["name"] != "slhmc":
        return
    if not has_fermions(c):
        what = "φ⁴" if c["theory"]["name"] == "phi4" else f"{c['theory']['name']!r} without fermions"
        raise ConfigError("sampler.name", f"self-learning HMC smears the links of the fermion "
                          f"action, so it needs dynamical fermions ({what} has none): set "
                          "theory.fermion = 'wilson' or 'staggered', or use sampler.name = 'hmc'")
    sl = c["slhmc"]
    if c["theory"]["fermion"] == "staggered" and not sl["m_eff"] > 0:
        raise ConfigError("slhmc.m_eff", f"the staggered effective action needs a mass > 0, got "
                          f"{sl['m_eff']:g}")
    if sl["loss"] == "centered" and c["sampler"]["n_chains"] < 2:
        raise ConfigError("slhmc.loss", "the centered loss subtracts the mean over the chains: "
                          "it needs sampler.n_chains >= 2 (or slhmc.loss = 'paper')")
    flow_loops(c, "slhmc")


def flow_rules(c: dict) -> None:
    if c["sampler"]["name"] not in ("flow", "flow_hmc"):
        return
    kind, name, shape = flow_kind(c), c["theory"]["name"], c["lattice"]["shape"]
    if name == "phi4" and kind != "coupling":
        raise ConfigError("flow.kind", f"{kind!r} is a flow for gauge fields; φ⁴ uses "
                          "flow.kind = 'coupling' (or 'auto')")
    if name != "phi4" and kind == "coupling":
        if gauge_N(c) != 1 or len(shape) != 2:
            raise ConfigError("flow.kind", "the coupling flow for gauge fields is the U(1) "
                              "plaquette coupling flow in two dimensions; use 'gradient' or "
                              "'luscher'")
        if any(L % 4 for L in shape):
            raise ConfigError("lattice.shape", f"the U(1) coupling flow needs extents that are "
                              f"multiples of 4, got {list(shape)}")
    if name != "phi4" and c["run"]["start_file"]:
        raise ConfigError("run.start_file", "the flow samplers start from a flow sample (flow) "
                          "or from Haar-random latent links (flow_hmc), not from a file")
    if kind in ("gradient", "luscher"):
        flow_loops(c)
        return
    k = c["flow"]["kernel"]
    if k % 2 != 1:
        raise ConfigError("flow.kernel", f"the kernel size must be odd, got {k}")
    if k // 2 > min(shape):
        raise ConfigError("flow.kernel", f"kernel {k} is wider than the lattice {list(shape)}")


# ------------------------------------------------------------------------------------------
# [run]: the world outside the file
# ------------------------------------------------------------------------------------------
def check_backend(name: str):
    """The namespace of ``run.backend``; :class:`ConfigError` with the install hint if absent."""
    from ..backend import namespace_by_name

    try:
        return namespace_by_name(name)
    except ImportError as exc:
        if name == "array_api_strict":
            raise ConfigError("run.backend", "array_api_strict is not installed; install it "
                              "with pip install array-api-strict (or the test extra, "
                              "pip install 'lattice-ml[test]')") from None
        raise ConfigError("run.backend", str(exc)) from None


def check_kernel_mode() -> str:
    """The kernel mode of ``LATTICE_ML_KERNELS``; :class:`ConfigError` for a bad value."""
    from ..dispatch import ENV_VAR, MODES, current_mode

    try:
        return current_mode()
    except ValueError:
        raise ConfigError(ENV_VAR, f"the environment variable is {os.environ.get(ENV_VAR)!r}; "
                          f"choose one of {', '.join(MODES)} or unset it") from None


_START_LINKS: dict = {}
"""At most one entry: the links of the last start file read by :func:`read_start_links`, under
the key of that read (the file's identity and the request), until the run takes them."""


def _start_key(path: str, xp, cdtype: str, n_chains: int, shape, N: int):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns,
            getattr(xp, "__name__", repr(xp)), cdtype, n_chains, tuple(shape), N)


def read_start_links(c: dict, xp=None, n_chains: int | None = None) -> Any:
    """The links of ``run.start_file`` ``[n_chains, D, *sites, N, N]``, checked against the run.

    A file with one configuration starts every chain from it; one with ``n_chains``
    configurations (an HDF5 ensemble) gives one to each chain. Links in the group only to 32-bit
    precision (|U^dag U - 1|, |det U - 1| <= 1e-5: a 32-bit file read in float64) are
    reunitarised; links further off, a missing or corrupt file, or links of another shape are a
    :class:`ConfigError` naming ``run.start_file``. ``xp`` defaults to the run's backend.

    The file is read once per run: the links read by the validation (:func:`run_rules`) are
    kept and handed to the next call with the same request (the run's start), which takes them,
    as long as the file is unchanged (same path, inode, size and modification time).
    """
    path = c["run"]["start_file"]
    N = gauge_N(c)
    xp = check_backend(c["run"]["backend"]) if xp is None else xp
    n_chains = c["sampler"]["n_chains"] if n_chains is None else n_chains
    cdtype = "complex128" if c["run"]["dtype"] == "float64" else "complex64"
    key = _start_key(path, xp, cdtype, n_chains, c["lattice"]["shape"], N)
    kept = _START_LINKS.pop(key, None) if key is not None else None
    _START_LINKS.clear()
    if kept is not None:
        return kept
    U = _read_checked_links(c, path, N, xp, n_chains, cdtype)
    if key is not None:
        _START_LINKS[key] = U
    return U


def _read_checked_links(c: dict, path: str, N: int, xp, n_chains: int, cdtype: str):
    from ..groups import check_links, reunitarize
    from ..io import read_gauge

    try:
        U = read_gauge(path, xp=xp, dtype=cdtype)
    except (ValueError, OSError) as exc:
        raise ConfigError("run.start_file", f"cannot start from {path}: {exc}") from None
    shape = c["lattice"]["shape"]
    want, got = [len(shape), *shape, N, N], list(U.shape[1:])
    if got != want:
        raise ConfigError("run.start_file", f"{path} holds links [D, *sites, N, N] = {got}; this "
                          f"run needs {want} (lattice.shape, N = {N})")
    if U.shape[0] == 1:
        U = xp.concat([U] * n_chains, axis=0)
    elif U.shape[0] != n_chains:
        raise ConfigError("run.start_file", f"{path} holds {U.shape[0]} configurations; give "
                          f"one, or one per chain (sampler.n_chains = {n_chains})")
    try:
        check_links(U, N)
    except ValueError:
        # rounding of a 32-bit file read at 64 bits is repaired; anything larger is refused
        try:
            check_links(U, N, tol=1e-5, name=f"the links of {path}")
        except ValueError as exc:
            raise ConfigError("run.start_file", f"cannot start from {path}: {exc}") from None
        U = reunitarize(U)
    return U


def run_rules(c: dict) -> None:
    check_backend(c["run"]["backend"])
    check_kernel_mode()
    if c["run"]["start_file"] and gauge_N(c) is not None:
        read_start_links(c)
