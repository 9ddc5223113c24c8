"""Statistics of Monte Carlo histories: Γ-method, jackknife, bootstrap, binning, reweighting,
cosh fits of periodic correlators, all-mode averaging (bias-corrected approximations), and the
hand-over of histories to pyerrors.

Histories are host data of shape ``(N,)`` (one chain) or ``(R, N)`` (replicas/chains first);
any array type is accepted and converted to NumPy. See ``docs/statistics.md``.
"""

from lattice_ml.stats.gamma import GammaResult, WindowWarning, gamma_method, tau_int
from lattice_ml.stats.fits import (CoshFit, choose_fit_range, cosh_correlator, fit_cosh_mass,
                                   fold_correlator, folded_errors)
from lattice_ml.stats.resampling import (
    BinningAnalysis,
    ResampleResult,
    binning,
    binning_analysis,
    bootstrap,
    jackknife,
)
from lattice_ml.stats.reweighting import effective_sample_size, reweight
from lattice_ml.stats.export import to_pyerrors
from lattice_ml.stats.ama import AMAResult, RidgeRegression, ama, ama_regression

__all__ = [
    "GammaResult",
    "WindowWarning",
    "gamma_method",
    "tau_int",
    "ResampleResult",
    "BinningAnalysis",
    "jackknife",
    "bootstrap",
    "binning",
    "binning_analysis",
    "effective_sample_size",
    "reweight",
    "CoshFit",
    "cosh_correlator",
    "fold_correlator",
    "folded_errors",
    "fit_cosh_mass",
    "choose_fit_range",
    "to_pyerrors",
    "AMAResult",
    "ama",
    "ama_regression",
    "RidgeRegression",
]
