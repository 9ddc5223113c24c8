"""Fermions: gamma matrices, Wilson (clover) and staggered Dirac operators with even/odd
preconditioning, and batch-aware Krylov solvers. Layout of fermion fields:
``[batch, *sites, spin, colour]`` complex."""

from .gamma import gamma5, gamma_matrices, n_spin, sigma_munu
from .solvers import (MixedInfo, MultiShiftInfo, SolverError, SolverInfo, bicgstab, cg, cg_mixed,
                      cgne, multishift_cg)
from .staggered import StaggeredDirac, staggered_epsilon, staggered_phases
from .wilson import WilsonDirac, clover_field_strength, kappa_from_mass, mass_from_kappa

__all__ = ["gamma5", "gamma_matrices", "n_spin", "sigma_munu", "WilsonDirac",
           "clover_field_strength", "kappa_from_mass", "mass_from_kappa", "StaggeredDirac",
           "staggered_phases", "staggered_epsilon", "cg", "cgne", "bicgstab", "multishift_cg",
           "cg_mixed", "SolverError", "SolverInfo", "MultiShiftInfo", "MixedInfo"]
