"""Heatbath and over-relaxation for pure gauge theory with the Wilson action.

Links ``U[batch, D, *sites, N, N]`` (N = 1 for U(1)), time = direction 0. With the Wilson
action ``S = -(beta/N) sum_x sum_{mu<nu} Re Tr P_{mu nu}(x)`` a single link enters as
``-(beta/N) Re Tr[U_mu(x) V_mu(x)]`` with the staple sum ``V_mu(x)`` (no coefficient,
``GaugeAction(beta, N, "wilson").staple_sum``), so its conditional distribution is

    dP(U) ~ exp((beta/N) Re Tr[U V]) dU        (dU Haar measure).

Algorithms (all vectorised over the batch and over the sites of one direction and parity)
---------------------------------------------------------------------------------------------
* **U(1)**: with ``V = |V| e^{i phi}`` and ``U = e^{i theta'}``, ``theta = theta' + phi`` is von
  Mises distributed, density ``~ exp(kappa cos theta)`` with ``kappa = beta |V|``. Sampled
  exactly by Best & Fisher, Appl. Statist. 28 (1979) 152 (wrapped-Cauchy envelope, acceptance
  >= 0.656 for every kappa); then ``U = e^{i theta} V^* / |V|``.
* **SU(2)**: ``V`` is a real multiple of an SU(2) matrix, ``V = k W`` with ``k = sqrt(det V)``.
  ``X = U W`` has density ``~ exp(alpha x0)`` with ``x0 = Re Tr X / 2`` and ``alpha = beta k``:
  ``x0`` has density ``sqrt(1 - x0^2) exp(alpha x0)`` on [-1, 1] and the 3-vector part is
  isotropic. ``delta = 1 - x0`` is drawn by Kennedy & Pendleton, Phys. Lett. B156 (1985) 393
  (for ``alpha >= 1.6847``) or by Creutz, Phys. Rev. D21 (1980) 2308 (below: there KP's
  acceptance drops like ``alpha^{3/2}``); the crossing point is where both accept 71 %, the
  worst case. Then ``U = X W^dagger``.
* **SU(N), N >= 3**: Cabibbo & Marinari, Phys. Lett. B119 (1982) 387. For each of the
  ``N(N-1)/2`` subgroups ``(i, j)``, ``i < j``, the link is updated as ``U -> R U`` with ``R``
  equal to an SU(2) matrix ``r`` in rows/columns ``i, j`` and the identity elsewhere. The density
  of ``r`` is ``~ exp((beta/N) Re Tr[R U V])``; with ``w`` the ``(i, j)`` block of ``U V``,
  ``Re Tr[R U V] = Re Tr[r w] + const``. Writing ``w = b0 + i b.sigma + (rest)`` with
  ``b0 = Re(w00 + w11)/2``, ``b1 = Im(w01 + w10)/2``, ``b2 = Re(w01 - w10)/2``,
  ``b3 = Im(w00 - w11)/2``, the rest does not contribute to ``Re Tr[r w]`` for any SU(2)
  ``r``, so ``Re Tr[r w] = k Re Tr[r w_hat]`` with ``k = |b|`` and ``w_hat = b/k`` in SU(2):
  the subgroup element is an SU(2) heatbath with ``alpha = (2 beta / N) k``
  (``x = r w_hat``, ``r = x w_hat^dagger``). For N = 2 this is the SU(2) case.

Over-relaxation (Brown & Woch 1987, Creutz 1987) reflects the link through the maximum of
its conditional distribution, which keeps ``Re Tr[U V]`` and therefore the action exactly:

* U(1): ``theta -> -theta - 2 arg V``, i.e. ``U -> U^* (V^*/|V|)^2``;
* SU(2): ``U -> W^dagger U^dagger W^dagger``;
* SU(N): per subgroup ``r = (w_hat^dagger)^2``, i.e. ``r w_hat = w_hat^dagger``.

Each single-link reflection is an involution; a sweep is undone by the sweep in the reverse
order (``reverse=True``).

Update order and vectorisation
------------------------------
For the Wilson action two links of the same direction ``mu`` at sites of the same parity never
share a plaquette (even extents), so all of them are drawn at once from their conditional
distributions. A *sweep* visits ``mu = 0 ... D-1`` and, for each, the even then the odd sites;
the staples are recomputed after every such half-sweep. The sampling itself runs on the
compact list of the sites of one parity (gathered with ``xp.take``) and is put back with a
gather and ``xp.where`` on the parity mask, so no scatter is needed.

Rejection loops run a fixed number ``rounds`` of proposal rounds for every link; a link keeps
the first accepted proposal (masks and ``xp.where``). Every chain draws the random numbers of
all rounds whether or not they are needed, one block per call, so the streams stay aligned.
Links still unaccepted after the fixed rounds (probability ``<= 0.345^rounds`` per link) are
never left as they are: they go on in further rounds until every link has accepted, with
numbers from a *fallback stream of their own chain*, a ``RandomStreams`` seeded from a number
that each chain draws from its main stream in every call. So a chain's result depends only on
its own stream, whatever the batch size, and the main streams are consumed in a fixed
pattern. A non-finite coupling would never accept; it raises ``RuntimeError`` after
``MAX_FALLBACK_ROUNDS`` further rounds instead of looping for ever.

Modules: :mod:`.streams` (rejection rounds and fallback streams), :mod:`.links` (the per-link
samplers and reflections in fixed staples), :mod:`.sweeps` (the sweep schedule), :mod:`.sampler`
(:class:`Heatbath`). The SU(2) quaternion algebra is :mod:`lattice_ml.groups.su2`. The constants
below live here and are read at call time.

Round-off: the U(1) and SU(2) heatbath build a fresh group element each time; Cabibbo-Marinari
and over-relaxation multiply onto the old link, so :class:`Heatbath` reunitarises
(``groups.reunitarize``) once per step.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_ROUNDS",
    "KP_CROSSOVER",
    "MAX_FALLBACK_ROUNDS",
    "Heatbath",
    "HeatbathStep",
    "heatbath_links",
    "overrelax_links",
    "heatbath_sweep",
    "overrelaxation_sweep",
    "subgroups",
]

DEFAULT_ROUNDS = 8
"""Fixed number of rejection rounds drawn per link and call (``<= 2e-4`` of the links need more
rounds from the fallback stream)."""

KP_CROSSOVER = 1.6847376360042774
"""``alpha`` above which the SU(2) heatbath uses Kennedy-Pendleton, below it Creutz (equal
acceptance 0.7114 there)."""

MAX_FALLBACK_ROUNDS = 1000
"""Further rounds after which a link that never accepts raises (only for non-finite input)."""

# the quaternions, the rejection loop and its fallback streams under their former names (tests)
from ...groups import qconj as _qconj, qentries as _qentries, qmatrix as _qmatrix  # noqa: E402
from ...groups import qmul as _qmul, qnormalise as _qnormalise, qproject as _qproject  # noqa: E402
from .streams import _Fallback, _rejection  # noqa: E402
from .links import heatbath_links, overrelax_links, subgroups  # noqa: E402
from .sweeps import heatbath_sweep, overrelaxation_sweep  # noqa: E402
from .sampler import Heatbath, HeatbathStep  # noqa: E402
