"""The schema of the ``lattice-ml`` configuration: every table, key, type, range and default.

Declarative data, and the two functions that walk it (:func:`iter_schema`,
:func:`resolved_params`); validation lives in :mod:`lattice_ml.cli.config`, the TOML text in
:mod:`lattice_ml.cli.toml_writer`. A table may have a *selector* key whose value picks a variant
sub-table with further keys: ``[theory]`` is selected by ``name`` and, for φ⁴, by ``form``;
``[sampler]`` by ``name``. Adding a theory or a sampler is one entry in :data:`THEORIES` or
:data:`SAMPLERS` (and removing its word from the planned tuple).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from . import rules

__all__ = ["REQUIRED", "Param", "Table", "THEORIES", "PLANNED_THEORIES", "SAMPLERS",
           "PLANNED_SAMPLERS", "SLHMC_NETWORKS", "SCHEMA", "THEORY_DEFAULTS", "RENAMED", "iter_schema", "resolved_params"]


class _Required:
    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of a parameter that the user must give (none of the current ones)."""


@dataclass(frozen=True)
class Param:
    """One configuration key.

    kind : ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"shape"`` (list of 2–4 even ints ≥ 2)
        or ``"ints"`` (list of positive ints, possibly empty).
    default : value used when no layer sets the key (:data:`REQUIRED`: must be set).
    minimum, maximum : inclusive bounds (``None``: unbounded); ``exclusive_minimum`` makes the
        lower bound strict.
    choices : allowed words of a ``"str"`` key (for a selector: the keys of ``Table.variants``).
    noun : what the word names, in error messages (``"theory"``, ``"backend"``, ...).
    doc : one line for ``default.toml``, ``lattice-ml config`` and ``docs/cli.md``.
    """

    kind: str
    default: Any = REQUIRED
    doc: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] | None = None
    noun: str = "value"


@dataclass(frozen=True)
class Table:
    """A table of parameters, optionally with a selector that picks a variant sub-table.

    The parameters of the chosen variant (recursively) are added to ``params``. ``planned``
    lists selector words that the specification names but that are not implemented yet: they
    get a "not implemented yet" error rather than "unknown". ``checks`` are the cross-key rules
    of this table (or variant): functions ``check(config)`` of the whole resolved configuration
    that raise :class:`~lattice_ml.cli.rules.ConfigError` naming the key to change; they run, in
    schema order, for every table and chosen variant once each key has passed its own checks
    (:mod:`lattice_ml.cli.rules` holds them, next to this schema).
    """

    params: dict[str, Param]
    selector: str | None = None
    variants: dict[str, "Table"] = field(default_factory=dict)
    planned: tuple[str, ...] = ()
    doc: str = ""
    checks: tuple = ()

    def owned_keys(self) -> set[str]:
        """Keys defined inside the variants (at any depth) and not in ``params``."""
        keys: set[str] = set()
        for variant in self.variants.values():
            keys |= set(variant.params) | variant.owned_keys()
        return keys - set(self.params)


# Standard-form defaults are the same theory as the hopping-form defaults (beta = 0.64,
# lam = 1.0) after phi_standard = sqrt(beta / 2) phi_hopping:
#   m2 = (2 / beta) (1 - 2 lam) - 2 D  (D = 2),   lam_standard = 4 lam / beta**2.
_PHI4 = Table(
    doc="real scalar φ⁴ theory",
    checks=(rules.phi4_rules,),
    params={
        "form": Param("str", "hopping", choices=("standard", "hopping"), noun="form of phi4",
                      doc='"standard": S = Σ [Σ_μ (φ(x+μ)−φ(x))² + m2 φ² + lam φ⁴]; '
                          '"hopping": S = Σ [−beta Σ_μ φ(x+μ)φ(x) + φ² + lam (φ²−1)²]'),
    },
    selector="form",
    variants={
        "standard": Table(params={
            "m2": Param("float", -7.125, doc="bare mass squared m² (any sign)"),
            "lam": Param("float", 9.765625, minimum=0.0, doc="quartic coupling λ ≥ 0"),
        }),
        "hopping": Table(params={
            "beta": Param("float", 0.64, minimum=0.0,
                          doc="hopping coupling β ≥ 0 (β = 2κ in the κ convention)"),
            "lam": Param("float", 1.0, minimum=0.0, doc="quartic coupling λ ≥ 0"),
        }),
    },
)

_GAUGE_ACTIONS = ("wilson", "symanzik", "iwasaki", "dbw2")


def _gauge(doc: str, beta: float, with_N: bool = False, fermions: bool = False) -> Table:
    params = {
        "beta": Param("float", beta, minimum=0.0, exclusive_minimum=True,
                      doc="gauge coupling β > 0 in S = −(β/N) Σ [c0 Re Tr P + c1 Re Tr R]"),
        "action": Param("str", "wilson", choices=_GAUGE_ACTIONS, noun="gauge action",
                        doc='"wilson" (c1 = 0), "symanzik" (−1/12), "iwasaki" (−0.331) or '
                            '"dbw2" (−1.4088)'),
    }
    if with_N:
        params["N"] = Param("int", 4, minimum=2, doc="number of colours N ≥ 2 of SU(N)")
    if not fermions:
        return Table(doc=doc, params=params, checks=(rules.gauge_rules,))
    params["fermion"] = _fermion_selector(("none", "wilson", "staggered"), "none")
    return Table(doc=doc, params=params, selector="fermion",
                 variants={"none": Table(doc="pure gauge", params={}), **_FERMIONS},
                 checks=(rules.gauge_rules, rules.fermion_rules))


def _n_sources() -> Param:
    return Param("int", 4, minimum=1, doc="stochastic (Z2 noise) sources per measurement of the "
                                          "chiral condensate")


def _fermion_selector(choices: tuple[str, ...], default: str) -> Param:
    return Param("str", default, choices=choices, noun="fermion discretisation",
                 doc=" | ".join(f'"{c}"' for c in choices) + ": dynamical fermions "
                     "(wilson: nf/2 two-flavour pseudofermions; staggered: rooted RHMC)")


# Dynamical fermions of the gauge theories (SU(N)) and of the Schwinger model.
_FERMIONS = {
    "wilson": Table(doc="Wilson(-clover) fermions, pseudofermion HMC", params={
        "mass": Param("float", 0.1, doc="bare Wilson mass m (κ = 1/(2m + 2D))"),
        "csw": Param("float", 0.0, minimum=0.0, doc="clover coefficient c_sw ≥ 0 (0: plain Wilson)"),
        "nf": Param("int", 2, minimum=2,
                    doc="number of degenerate flavours, even: nf/2 pseudofermion fields of det D†D"),
        "n_sources": _n_sources(),
    }),
    "staggered": Table(doc="rooted staggered fermions, RHMC", params={
        "mass": Param("float", 0.1, minimum=0.0, exclusive_minimum=True,
                      doc="staggered mass m > 0"),
        "nf": Param("int", 2, minimum=1,
                    doc="number of degenerate flavours: det(D†D)^(nf/2^(D/2+1)) (D = 2, 4)"),
        "n_sources": _n_sources(),
    }),
}

_SCHWINGER = Table(
    doc="2D U(1) gauge theory with Nf dynamical Wilson or staggered fermions (Schwinger model)",
    params={
        "beta": Param("float", 2.0, minimum=0.0, exclusive_minimum=True,
                      doc="gauge coupling β > 0 of the Wilson gauge action"),
        "fermion": _fermion_selector(("wilson", "staggered"), "wilson"),
    },
    selector="fermion",
    variants=_FERMIONS,
    checks=(rules.schwinger_rules, rules.gauge_rules, rules.fermion_rules),
)

THEORIES: dict[str, Table] = {
    "phi4": _PHI4,
    "u1": _gauge("compact U(1) gauge theory", 2.0),
    "su2": _gauge("SU(2) gauge theory", 2.3, fermions=True),
    "su3": _gauge("SU(3) gauge theory", 6.0, fermions=True),
    "suN": _gauge("SU(N) gauge theory", 11.0, with_N=True, fermions=True),
    "schwinger": _SCHWINGER,
}
"""Implemented theories: ``name`` → variant table of ``[theory]``."""

PLANNED_THEORIES: tuple[str, ...] = ()

_GAUGE_FLOW = {"flow.train_steps": 100, "flow.batch_size": 16}
THEORY_DEFAULTS: dict[str, dict[str, Any]] = {
    "phi4": {},
    "u1": {"n_chains": 8, "n_therm": 200, "n_samples": 1000, **_GAUGE_FLOW},
    "su2": {"n_chains": 2, "n_therm": 100, "n_samples": 200, **_GAUGE_FLOW},
    "su3": {"n_chains": 2, "n_therm": 100, "n_samples": 200, **_GAUGE_FLOW},
    "suN": {"n_chains": 2, "n_therm": 100, "n_samples": 200, **_GAUGE_FLOW},
    "schwinger": {"n_chains": 4, "n_therm": 100, "n_samples": 400},
}
"""Sampler defaults of each theory where they differ from the embedded default (which is φ⁴'s);
a dotted key names another table (``flow.train_steps``: gauge-field flows train 100 steps of
16 configurations by default, a few minutes on one core at 8x8 SU(3)).

They replace a default only: a key set in the user's file or by ``--set`` keeps its value. The
gauge theories start from unit links and rely on the step-count adaptation of the
thermalisation (``sampler.adapt_steps``) to leave the ordered start (whose trajectories have
ΔH ≈ 20 on 8⁴ SU(3) at β = 6 with 8 steps); their run lengths are sized for a few minutes on a
laptop core at 8⁴ (SU(N)) or 32² (U(1), Schwinger)."""

_HMC = Table(
    doc="hybrid Monte Carlo",
    params={
        "integrator": Param("str", "omelyan", choices=("leapfrog", "omelyan"), noun="integrator",
                            doc='molecular-dynamics integrator: "leapfrog" or "omelyan" (2MN)'),
        "n_steps": Param("int", 8, minimum=1, doc="integration steps per trajectory (outer level)"),
        "tau": Param("float", 1.0, minimum=0.0, exclusive_minimum=True,
                     doc="trajectory length (molecular-dynamics time) > 0"),
        "fine_steps": Param("int", 0, minimum=0,
                            doc="0: one time scale; > 0: two levels, with this many inner steps "
                                "per outer step (φ⁴: local potential inner; gauge: plaquettes "
                                "inner, rectangles outer)"),
        "tau_jitter": Param("float", 0.1, minimum=0.0, maximum=0.9,
                            doc="each chain's trajectory length is drawn uniformly from "
                                "[tau (1 - j), tau (1 + j)] every trajectory (0: fixed)"),
        "adapt_steps": Param("bool", True,
                             doc="adapt n_steps (the step size tau/n_steps) during "
                                 "thermalisation towards target_acceptance; false: keep n_steps"),
        "target_acceptance": Param("float", 0.8, minimum=0.05, maximum=0.99,
                                   doc="acceptance the thermalisation adapts n_steps towards"),
    },
)

_HEATBATH = Table(
    doc="heatbath + over-relaxation (gauge theories with the Wilson action)",
    params={
        "n_or": Param("int", 1, minimum=0, doc="over-relaxation sweeps after each heatbath sweep"),
    },
)

# Normalizing-flow samplers: the flow is trained (reverse KL or path gradient, Adam, cosine
# decay) before the chains start; its kind, architecture and training live in the [flow] table.
FLOW_KINDS = ("auto", "coupling", "gradient", "luscher")
FLOW_LOSSES = ("reverse_kl", "path_gradient")     # the trainer's mode names (FlowTrainer)
FLOW_MEMORY = ("stages", "states", "constant")    # GradientFlow(memory=...)
_FLOW_TABLE = Table(
    doc="the normalizing flow of sampler.name = flow | flow_hmc; ignored by other samplers",
    checks=(rules.flow_rules,),
    params={
        "kind": Param("str", "auto", choices=FLOW_KINDS, noun="flow kind",
                      doc="coupling (phi4; u1 in 2D) | gradient (learned gradient flow, gauge "
                          "theories) | luscher (its leading order, no training) | auto: "
                          "coupling for phi4, gradient for gauge theories"),
        "loops": Param("str", "plaquette,rectangle",
                       doc="gradient: loop types of the flow action, comma-separated from "
                           "plaquette, rectangle, chair (D >= 3), polyakov; a class function "
                           "of a loop type as <loop>:<function>, function re_tr2 (Re Tr W^2), "
                           "re_tr_sq (Re (Tr W)^2) or abs_tr_sq (|Tr W|^2; not U(1)), e.g. "
                           "plaquette,plaquette:re_tr2"),
        "n_t": Param("int", 2, minimum=1,
                     doc="gradient: Legendre polynomials in t per loop coefficient"),
        "n_steps": Param("int", 8, minimum=1,
                         doc="gradient, luscher: RK3 integration steps over t in [0, 1]"),
        "max_density_error": Param("float", 0.01, minimum=0.0, exclusive_minimum=True,
                                   doc="gradient, luscher: the run fails when the rms change of "
                                       "log w on halving the step exceeds this"),
        "n_layers": Param("int", 16, minimum=1, doc="coupling: layers (checkerboard masks for "
                                                    "phi4, plaquette masks for u1)"),
        "channels": Param("int", 8, minimum=1, doc="coupling: hidden channels of each conditioner"),
        "hidden_layers": Param("int", 2, minimum=0,
                               doc="coupling: hidden convolutions per conditioner (0: one)"),
        "kernel": Param("int", 3, minimum=1,
                        doc="coupling: odd kernel size of the periodic convolutions"),
        "memory": Param("str", "stages", choices=FLOW_MEMORY, noun="flow memory",
                        doc="gradient, luscher: what the forward pass keeps for the gradients: "
                            "stages (every stage; fastest) | states (the links of every step) | "
                            "constant (nothing: the steps are inverted again)"),
        "loss": Param("str", "reverse_kl", choices=FLOW_LOSSES, noun="flow loss",
                      doc="training estimator: reverse_kl | path_gradient (the same loss, "
                          "gradient through grad log q at fixed parameters; lower variance "
                          "near an exact flow, several times the cost per step)"),
        "train_steps": Param("int", 1000, minimum=0, doc="training steps (Adam)"),
        "batch_size": Param("int", 64, minimum=2, doc="configurations per training step"),
        "lr": Param("float", 5e-3, minimum=0.0, exclusive_minimum=True,
                    doc="initial learning rate, cosine decay to lr/100 over train_steps"),
        "max_grad_norm": Param("float", 100.0, minimum=0.0,
                               doc="the gradient is clipped to this global norm (0: no clipping)"),
    },
)
_FLOW = Table(doc="independence Metropolis with a trained normalizing flow (see [flow])",
              params={})
_FLOW_HMC = Table(
    doc="HMC in the latent space of a trained normalizing flow (see [flow])",
    params={k: _HMC.params[k] for k in ("integrator", "n_steps", "tau", "tau_jitter",
                                        "adapt_steps", "target_acceptance")},
)

_SLHMC = Table(
    doc="self-learning HMC (gauge theories with fermions; see [slhmc])",
    params=dict(_HMC.params),
)

SLHMC_NETWORKS = ("stout", "cask")
_SLHMC_TABLE = Table(
    doc="the effective action of sampler.name = slhmc; ignored by other samplers",
    checks=(rules.slhmc_rules,),
    params={
        "network": Param("str", "stout", choices=SLHMC_NETWORKS, noun="SLHMC network",
                         doc="stout (one weight ρ per loop type and layer) | cask (covariant "
                             "attention: a weight ρ and an attention weight β per loop type and "
                             "layer)"),
        "n_layers": Param("int", 2, minimum=1, doc="layers of the gauge-covariant network"),
        "loops": Param("str", "plaquette,polyakov",
                       doc="loop types of every layer, comma-separated from plaquette, "
                           "rectangle, chair (D >= 3), polyakov (a temporal and a spatial weight)"),
        "m_eff": Param("float", 0.2,
                       doc="fermion mass of the effective action (staggered: > 0); a heavier "
                           "mass makes its solves cheaper"),
        "train_trajectories": Param("int", 50, minimum=0,
                                    doc="HMC trajectories of the true action with online "
                                        "training, after thermalisation (0: untrained network)"),
        "lr": Param("float", 0.002, minimum=0.0, exclusive_minimum=True,
                    doc="initial Adam learning rate, cosine decay to lr/10 over the training"),
        "loss": Param("str", "paper", choices=("paper", "centered"), noun="SLHMC loss",
                      doc='"paper": ½<|S_θ − S|²>; "centered": ½<(S_θ − S − <S_θ − S>)²> over '
                          'the chains (needs n_chains >= 2)'),
    },
)

RENAMED: dict[str, str] = {
    "flow.layers": "flow.n_layers",
    "flow.batch": "flow.batch_size",
    "flow.clip": "flow.max_grad_norm",
    "theory.n_noise": "theory.n_sources",
}
"""Keys of earlier versions → their names now (same meaning, the library's word: ``n_layers`` of
:func:`~lattice_ml.flows.make_phi4_flow`, ``batch_size`` and ``max_grad_norm`` of
:class:`~lattice_ml.flows.FlowTrainer`, ``n_sources`` of
:func:`~lattice_ml.fermions.chiral_condensate`). An old key is refused with a one-line message
naming the new one, never silently accepted or ignored."""

SAMPLERS: dict[str, Table] = {"hmc": _HMC, "heatbath": _HEATBATH, "flow": _FLOW,
                              "flow_hmc": _FLOW_HMC, "slhmc": _SLHMC}
"""Implemented samplers: ``name`` → variant table of ``[sampler]``."""

PLANNED_SAMPLERS: tuple[str, ...] = ()

def _parallel_rules(c: dict) -> None:
    """The ``[parallel]`` rules (:func:`lattice_ml.cli.parallel.parallel_rules`: the grid
    against the lattice and what the decomposed run supports; the number of ranks is checked
    where a run starts or resumes, :func:`lattice_ml.cli.parallel.check_ranks`)."""
    from .parallel import parallel_rules

    parallel_rules(c)


def _planned(words: tuple[str, ...]) -> str:
    return f" (not implemented yet: {', '.join(words)})" if words else ""


SCHEMA: dict[str, Table] = {
    "lattice": Table(
        doc="the periodic lattice",
        params={
            "shape": Param("shape", [32, 32],
                           doc="extents [L0, L1, ...]: D = 2, 3 or 4 even integers ≥ 2"),
        },
    ),
    "theory": Table(
        doc="the field theory and its couplings",
        params={
            "name": Param("str", "phi4", choices=tuple(THEORIES), noun="theory",
                          doc="theory: " + " | ".join(THEORIES) + _planned(PLANNED_THEORIES)),
        },
        selector="name",
        variants=THEORIES,
        planned=PLANNED_THEORIES,
    ),
    "sampler": Table(
        doc="the Markov chains",
        params={
            "name": Param("str", "hmc", choices=tuple(SAMPLERS), noun="sampler",
                          doc="sampler: " + " | ".join(SAMPLERS) + _planned(PLANNED_SAMPLERS)),
            "n_chains": Param("int", 16, minimum=1,
                              doc="independent chains run at once (the batch axis)"),
            "n_therm": Param("int", 500, minimum=0,
                             doc="thermalisation trajectories per chain, not measured"),
            "n_samples": Param("int", 5000, minimum=1, doc="measurements per chain"),
            "measure_every": Param("int", 1, minimum=1,
                                   doc="trajectories between measurements"),
            "start": Param("str", "cold", choices=("cold", "hot"), noun="start",
                           doc='initial field: "cold" (φ = 0; unit links) or "hot" (φ standard '
                               'normal per site; Haar-random links)'),
            "min_acceptance": Param("float", 0.1, minimum=0.0, maximum=0.99,
                                    doc="the run fails, without a summary, when the acceptance "
                                        "of the measured updates is below this floor"),
        },
        selector="name",
        variants=SAMPLERS,
        planned=PLANNED_SAMPLERS,
        checks=(rules.sampler_rules,),
    ),
    "flow": _FLOW_TABLE,
    "slhmc": _SLHMC_TABLE,
    "run": Table(
        doc="reproducibility, backend and display",
        params={
            "seed": Param("int", 1, minimum=0, doc="master seed ≥ 0 (chain b uses stream b)"),
            "backend": Param("str", "numpy", choices=("numpy", "cupy", "array_api_strict"),
                             noun="backend", doc='array library: "numpy", "cupy" or '
                                                 '"array_api_strict"'),
            "dtype": Param("str", "float64", choices=("float64", "float32"), noun="dtype",
                           doc='real floating type of the fields: "float64" or "float32"'),
            "progress": Param("str", "auto", choices=("auto", "always", "never"),
                              noun="progress mode",
                              doc='progress line on stderr: "auto" (only on a terminal), '
                                  '"always" or "never"'),
            "checkpoint_every": Param("int", 0, minimum=0,
                                      doc="write DIR/checkpoint.ckpt every this many updates "
                                          "(0: not by count)"),
            "checkpoint_seconds": Param("float", 600.0, minimum=0.0,
                                        doc="write DIR/checkpoint.ckpt when this many seconds "
                                            "have passed since the last one (0: not by time)"),
            "keep_checkpoint": Param("bool", False,
                                     doc="keep the final checkpoint after a successful run "
                                         "(false: delete it once summary.json is written)"),
            "start_file": Param("str", "",
                                doc='gauge theories: start every chain from the links in this '
                                    'file (NERSC, ILDG, openQCD or HDF5; "": sampler.start)'),
            "reunitarize_every": Param("int", 10, minimum=0,
                                       doc="gauge theories: project the links back onto the "
                                           "group every this many updates (0: never)"),
        },
        checks=(rules.run_rules,),
    ),
    "output": Table(
        doc="configurations saved during the run, under DIR/configs/",
        params={
            "save_every": Param("int", 0, minimum=0,
                                doc="save the chains' configurations every this many measured "
                                    "updates (0: none)"),
            "format": Param("str", "hdf5", choices=("hdf5", "nersc", "ildg", "openqcd"),
                            noun="configuration format",
                            doc='"hdf5" (one appendable ensemble, every theory), "nersc", '
                                '"ildg" or "openqcd" (one file per chain and save; 4D SU(3))'),
        },
    ),
    "measure": Table(
        doc="extra gauge-field measurements (each every measure.every measurements)",
        params={
            "every": Param("int", 10, minimum=1,
                           doc="measurements between two of these (costlier) ones"),
            "clover_charge": Param("bool", False,
                                   doc="4D: clover topological charge Q and χ_t = <Q²>/V"),
            "wilson_flow": Param("bool", False,
                                 doc="Wilson flow: t0 (t²E = 0.3) and w0 (t d(t²E)/dt = 0.3)"),
            "flow_eps": Param("float", 0.02, minimum=0.0, exclusive_minimum=True,
                              doc="Wilson-flow step (RK3)"),
            "flow_t_max": Param("float", 3.0, minimum=0.0, exclusive_minimum=True,
                                doc="largest Wilson-flow time"),
            "wilson_loops": Param("int", 0, minimum=0,
                                  doc="Wilson loops W(R, T) for R, T <= this, and Creutz ratios "
                                      "(0: none)"),
            "ama_sloppy": Param("bool", False,
                                doc="fermions: chiral condensate by AMA, truncated solves at every "
                                    "measurement + exact solves of the same noise every "
                                    "measure.every"),
            "sloppy_iterations": Param("int", 10, minimum=1,
                                       doc="CGNR iterations of each truncated solve "
                                           "(ama_sloppy)"),
            "ama_regression": Param("bool", False,
                                    doc="fermions: chiral condensate by AMA with a ridge "
                                        "regression from gauge loops, exact every measure.every"),
            "ama_train": Param("int", 10, minimum=1,
                               doc="exact measurements per chain that train the regression "
                                   "(left out of its AMA average)"),
        },
        checks=(rules.measure_rules,),
    ),
    "parallel": Table(
        doc="MPI: mpiexec -n R lattice-ml run CONFIG (docs/parallel.md)",
        params={
            "chains": Param("bool", True,
                            doc="under mpiexec, split sampler.n_chains over the ranks in "
                                "contiguous blocks (results identical to one process)"),
            "grid": Param("ints", [],
                          doc="ranks per direction [g0, g1, ...] (product = the ranks): split "
                              "the sites in blocks; [] = no site split"),
        },
        checks=(_parallel_rules,),
    ),
}
"""The whole schema: table name → :class:`Table`."""


# ------------------------------------------------------------------------------------------
# walking the schema
# ------------------------------------------------------------------------------------------
def iter_schema() -> Iterable[tuple[str, tuple[tuple[str, str], ...], str, Param]]:
    """Every parameter as ``(table, selector chain, key, Param)``, in schema order.

    The selector chain says which variant the key belongs to, e.g.
    ``(("name", "phi4"), ("form", "hopping"))`` for ``theory.beta``; it is empty for keys
    common to every variant.
    """

    def walk(section: str, table: Table, chain):
        for key, p in table.params.items():
            yield section, chain, key, p
        for word, variant in table.variants.items():
            yield from walk(section, variant, chain + ((table.selector, word),))

    for section, table in SCHEMA.items():
        yield from walk(section, table, ())


def resolved_params(section: str, values: Mapping[str, Any]) -> tuple[dict[str, Param], list]:
    """Parameters allowed in ``section`` given the selector words in ``values``.

    Returns ``(params, chain)``: ``params`` maps each allowed key to its :class:`Param` (common
    keys first, then the chosen variants' keys); ``chain`` lists the ``(selector, word)`` pairs
    followed. Unknown selector words stop the descent (validation reports them).
    """
    table = SCHEMA[section]
    params: dict[str, Param] = {}
    chain: list[tuple[str, str]] = []
    while True:
        params.update(table.params)
        if table.selector is None:
            break
        word = values.get(table.selector, table.params[table.selector].default)
        if not isinstance(word, str) or word not in table.variants:
            break
        chain.append((table.selector, word))
        table = table.variants[word]
    return params, chain
