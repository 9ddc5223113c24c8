"""Exact results of 2D lattice gauge theory used as references in the tests.

With the Wilson action on a periodic L0 x L1 torus (V plaquettes) the plaquettes are independent
up to one global constraint, and the character expansion gives Z = sum_r c_r(beta)^V, with
c_r = (1/d_r) int dU exp((beta/N) Re Tr U) chi_r(U)^* (Euler characteristic 0, so no powers of
d_r). Hence <P> = (1/V) d ln Z / d beta.

* U(1): c_n = I_n(beta) (modified Bessel functions), all n in Z, summed exactly.
* SU(N): the trivial representation dominates; <P> = d ln c_0 / d beta, with c_0 computed by
  Weyl's integration formula over the eigenphases, up to corrections of order
  V (c_f / c_0)^V = V <P>^V, which the caller checks to be negligible.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ive


def u1_plaquette(beta: float, volume: int, n_max: int = 40) -> float:
    """<Re P> of 2D U(1) on a torus of ``volume`` plaquettes: sum_n I_n^(V-1) I_n' / sum_n I_n^V."""
    n = np.arange(-n_max, n_max + 1)
    # ive = exp(-beta) I_n: the common factor cancels in the ratio
    i_n = ive(n, beta)
    d_n = 0.5 * (ive(n - 1, beta) + ive(n + 1, beta))
    logs = volume * np.log(i_n)
    w = np.exp(logs - logs.max())
    return float(np.sum(w * d_n / i_n) / np.sum(w))


def sun_plaquette(beta: float, N: int, points: int = 96) -> float:
    """<Re Tr P>/N of 2D SU(N) in infinite volume by Weyl integration over the eigenphases."""
    grid = 2 * np.pi * np.arange(points) / points
    thetas = np.meshgrid(*([grid] * (N - 1)), indexing="ij")
    last = -sum(thetas)
    phases = [*thetas, last]
    z = [np.exp(1j * t) for t in phases]
    vandermonde = np.ones_like(last)
    for i in range(N):
        for j in range(i + 1, N):
            vandermonde = vandermonde * np.abs(z[i] - z[j]) ** 2
    re_tr = sum(np.cos(t) for t in phases)
    weight = vandermonde * np.exp(beta / N * (re_tr - N))
    return float(np.sum(weight * re_tr / N) / np.sum(weight))


def u1_topological_susceptibility(beta: float, volume: int, n_max: int = 30,
                                  points: int = 4001) -> float:
    """<Q^2>/V of 2D U(1) (Wilson action, geometric charge) on a torus of ``volume`` plaquettes.

    With the theta term, Z(theta) = sum_n f(n + theta/2pi)^V where
    f(nu) = (1/2pi) int_{-pi}^{pi} exp(beta cos phi + i nu phi) dphi, because the plaquette angles
    phi_p in (-pi, pi] are independent up to the constraint prod_p P_p = 1 and Q = sum_p phi_p/2pi.
    Then <Q^2> = -Z''(0)/Z(0), with the nu-derivatives of f by quadrature.
    """
    phi = np.linspace(-np.pi, np.pi, points)
    w = np.exp(beta * (np.cos(phi) - 1.0))  # common factor exp(beta) cancels

    def integral(y):
        return np.trapezoid(y, phi) / (2 * np.pi)

    num = den = 0.0
    logs = []
    terms = []
    for n in range(-n_max, n_max + 1):
        f0 = integral(w * np.cos(n * phi))
        f1 = integral(-w * phi * np.sin(n * phi))
        f2 = integral(-w * phi ** 2 * np.cos(n * phi))
        terms.append((f0, f1, f2))
        logs.append(volume * np.log(abs(f0)) if f0 != 0 else -np.inf)
    ref = max(logs)
    for (f0, f1, f2), lg in zip(terms, logs):
        if not np.isfinite(lg):
            continue
        scale = np.exp(lg - ref)  # f0^V / max
        den += scale
        # Z''(nu) / f0^V = V (V-1) (f1/f0)^2 + V f2/f0, and d/dtheta = (1/2pi) d/dnu
        num += scale * (volume * (volume - 1) * (f1 / f0) ** 2 + volume * f2 / f0)
    q2 = -num / den / (2 * np.pi) ** 2
    return float(q2 / volume)
