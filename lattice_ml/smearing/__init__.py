"""Smearing: APE with SU(N) projection; stout smearing (any loop set) with exact hand-written
backward passes and the exact derivative of the exponential map; covariant attention with a stout
kernel (CASK); actions on smeared links."""

from .ape import ape_smear, project_max_trace
from .expderiv import expm_frechet_block, expm_pullback, su3_b_coefficients, xi1
from .loop_sets import chair_shapes, custom_loops, polyakov_loops, resolve_loops, restrict_loops
from .stout import (StoutContext, direction_weights, stout_backward, stout_smear,
                    stout_generator, stout_generator_pullback,
                    stout_plaquette_layer, stout_plaquette_layer_backward)
from .stout_network import StoutSmearing
from .smeared_action import SmearedAction
from .cask import CASKContext, CASKSmearing, cask_backward, cask_smear

__all__ = ["ape_smear", "project_max_trace", "SmearedAction", "stout_smear", "stout_backward", "StoutContext", "StoutSmearing", "resolve_loops",
           "chair_shapes", "custom_loops", "restrict_loops", "polyakov_loops",
           "direction_weights", "expm_pullback", "expm_frechet_block", "su3_b_coefficients",
           "xi1", "stout_plaquette_layer", "stout_plaquette_layer_backward", "stout_generator",
           "stout_generator_pullback", "CASKSmearing", "CASKContext", "cask_smear",
           "cask_backward"]
