"""Fermions: gamma matrices, Wilson (clover) and staggered Dirac operators with even/odd
preconditioning, batch-aware Krylov solvers, two-flavour pseudofermions with their force,
rational approximations (Remez), rooted staggered RHMC and unrooted staggered pseudofermions, the clover force, the pion
correlator and chiral condensate, and gauge-equivariant parallel-transport convolutions
(preconditioners). Layout of fermion fields:
``[batch, *sites, spin, colour]`` complex."""

from .clover import clover_force_matrix, clover_logdet, clover_logdet_force_matrix
from .gamma import gamma5, gamma_matrices, n_spin, sigma_munu
from .observables import chiral_condensate, effective_mass, pion_correlator, point_source
from .ptc import (LocalPTC, ParallelTransport, PTC, PTCNetwork, ptc_paths,
                  train_preconditioner)
from .pseudofermion import WilsonPseudofermionAction, hopping_force_matrix, wilson_fermion_force
from .rhmc import (StaggeredRationalAction, staggered_force_matrix, staggered_root_powers,
                   staggered_spectral_bounds)
from .rational import (RationalApproximation, RemezRoundoffError, remez,
                       zolotarev_inverse_sqrt)
from .solvers import (MixedInfo, MultiShiftInfo, SolverError, SolverInfo, bicgstab, cg, cg_mixed,
                      cgne, fgmres, multishift_cg)
from .staggered import StaggeredDirac, staggered_epsilon, staggered_hop, staggered_phases
from .staggered_pseudofermion import StaggeredPseudofermionAction
from .wilson import (WilsonDirac, clover_field_strength, compress_links, decompress_links,
                     kappa_from_mass, mass_from_kappa, wilson_hop)

__all__ = ["clover_force_matrix", "clover_logdet", "clover_logdet_force_matrix", "gamma5",
           "gamma_matrices", "n_spin", "sigma_munu", "WilsonDirac", "wilson_hop",
           "compress_links", "decompress_links", "staggered_hop",
           "clover_field_strength", "kappa_from_mass", "mass_from_kappa", "StaggeredDirac",
           "staggered_phases", "staggered_epsilon", "cg", "cgne", "bicgstab", "fgmres", "multishift_cg",
           "cg_mixed", "SolverError", "SolverInfo", "MultiShiftInfo", "MixedInfo",
           "pion_correlator", "effective_mass", "chiral_condensate", "point_source",
           "WilsonPseudofermionAction", "wilson_fermion_force",
           "hopping_force_matrix", "StaggeredRationalAction", "StaggeredPseudofermionAction", "staggered_force_matrix",
           "staggered_root_powers", "staggered_spectral_bounds", "RationalApproximation",
           "RemezRoundoffError", "remez", "zolotarev_inverse_sqrt", "PTC", "LocalPTC",
           "PTCNetwork", "ParallelTransport", "ptc_paths", "train_preconditioner"]
