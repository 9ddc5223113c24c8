"""Samplers: molecular-dynamics integrators and HMC (written once for any field space)."""

from .hmc import HMC, HMCStep, metropolis, select_chains
from .integrators import OMELYAN_LAMBDA, SCHEMES, Level, integrate
from .spaces import EuclideanSpace, LieGroupSpace

__all__ = ["HMC", "HMCStep", "metropolis", "select_chains", "Level", "integrate", "SCHEMES",
           "OMELYAN_LAMBDA", "EuclideanSpace", "LieGroupSpace"]
