"""Flow HMC: Hybrid Monte Carlo in the latent space of a normalizing flow.

With ``x = f(z)`` the target ``p(x) ∝ exp(-S(x))`` becomes, in the latent variables,

    p(z) ∝ exp(-S(f(z))) |det df/dz| = exp(-S_f(z)),     S_f(z) = S(f(z)) - log|det df/dz|,

the *pulled-back action* (for a perfect flow ``S_f(z) = z^2/2 + const``, a free field). Its force
is a vector-Jacobian product of the flow with respect to its input,

    F_f(z) = -dS_f/dz = -vjp_z(gx = dS/dx = -F(x), glogJ = -1),

so HMC in ``z`` (:class:`~lattice_ml.samplers.hmc.HMC` with a Euclidean space and the usual
integrators) samples ``p(z)`` exactly and ``x = f(z)`` samples ``p(x)`` (the Jacobian is in
``S_f``). The flow only has to be invertible; its quality sets the step size and autocorrelation.
"""

from __future__ import annotations

from ..backend import namespace
from .hmc import HMC
from .integrators import Level
from .spaces import EuclideanSpace, LieGroupSpace

__all__ = ["PulledBackAction", "FlowHMC"]


class PulledBackAction:
    """``S_f(z) = S(f(z)) - log|det df/dz|`` and its force (see the module docstring).

    ``action`` needs ``action(x)`` and ``force(x)`` (``-dS/dx``), e.g.
    :class:`~lattice_ml.scalar.Phi4Action`.
    """

    def __init__(self, flow, action):
        self.flow = flow
        self.target = action

    def action(self, z):
        x, logJ = self.flow.forward(z)
        return self.target.action(x) - logJ

    def force(self, z):
        xp = namespace(z)
        x, logJ, caches = self.flow.forward_cache(z)
        g_x = -self.target.force(x)                                # dS/dx
        g_logJ = xp.full((z.shape[0],), -1.0, dtype=logJ.dtype)  # d(-logJ)/dlogJ
        g_z, _ = self.flow.vjp(caches, g_x, g_logJ, need_params=False)
        return -g_z


class FlowHMC:
    """HMC on the pulled-back action of ``flow`` for ``action``.

    Parameters
    ----------
    flow, action : see :class:`PulledBackAction`
    n_steps, scheme : integrator steps per trajectory and scheme (``leapfrog``/``omelyan``)
    tau, tau_jitter : trajectory length and its relative randomisation (see
        :class:`~lattice_ml.samplers.hmc.HMC`)

    The chain state is the latent field ``z[batch, *sites]`` (for a gauge-field flow, latent
    links ``[batch, D, *sites, N, N]``, moved by HMC on the group: momenta in the Lie algebra,
    the force from the flow's vjp in the algebra convention of
    :mod:`lattice_ml.flows.gradient_flow`); :meth:`to_field` maps it to ``x``.
    """

    def __init__(self, flow, action, n_steps: int = 10, tau: float = 1.0,
                 scheme: str = "leapfrog", tau_jitter: float = 0.0):
        self.flow = flow
        self.latent_action = PulledBackAction(flow, action)
        # gauge-field flows (latent links, attribute N) move on the group
        space = LieGroupSpace(flow.N) if hasattr(flow, "N") else EuclideanSpace()
        self.hmc = HMC([Level([self.latent_action], n_steps, scheme)], space, tau, tau_jitter)

    def with_n_steps(self, n_steps: int) -> "FlowHMC":
        """The same sampler with ``n_steps`` integration steps per trajectory."""
        new = object.__new__(FlowHMC)
        new.flow, new.latent_action = self.flow, self.latent_action
        new.hmc = self.hmc.with_n_steps(n_steps)
        return new

    def step(self, z, rng):
        """One HMC update of the latent fields; returns ``(z, HMCStep)``."""
        return self.hmc.step(z, rng)

    def to_field(self, z):
        """``x = f(z)``."""
        return self.flow.forward(z)[0]

    def from_field(self, x):
        """``z = f^{-1}(x)`` (to start from given configurations)."""
        return self.flow.inverse(x)[0]
