"""Fermions: gamma matrices, Wilson (clover) and staggered Dirac operators with even/odd
preconditioning. Layout of fermion fields: ``[batch, *sites, spin, colour]`` complex."""

from .gamma import gamma5, gamma_matrices, n_spin, sigma_munu
from .staggered import StaggeredDirac, staggered_epsilon, staggered_phases
from .wilson import WilsonDirac, clover_field_strength, kappa_from_mass, mass_from_kappa

__all__ = ["gamma5", "gamma_matrices", "n_spin", "sigma_munu", "WilsonDirac",
           "clover_field_strength", "kappa_from_mass", "mass_from_kappa", "StaggeredDirac",
           "staggered_phases", "staggered_epsilon"]
