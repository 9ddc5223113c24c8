"""Samplers: molecular-dynamics integrators and HMC (written once for any field space), and
heatbath + over-relaxation for gauge fields, and the flow-based samplers (independence Metropolis
with a normalizing flow, flow HMC in the latent space, flow Metropolis alternated with HMC), and
self-learning HMC (molecular dynamics of a trained effective action, Metropolis test with the
true one)."""

from .heatbath import Heatbath, HeatbathStep, heatbath_sweep, overrelaxation_sweep
from .hmc import HMC, HMCStep, metropolis, select_chains
from .pseudofermion_hmc import PseudofermionHMC
from .integrators import OMELYAN_LAMBDA, SCHEMES, Level, integrate
from .spaces import EuclideanSpace, LieGroupSpace
from .flow_mcmc import FlowMCMCState, FlowMCMCStep, FlowMetropolis
from .flow_hmc import FlowHMC, PulledBackAction
from .flow_mixture import FlowHMCMixture, MixtureStep
from .slhmc import (SelfLearningHMC, effective_network, network_parameter_names,
                    train_effective_action)

__all__ = ["Heatbath", "HeatbathStep", "heatbath_sweep", "overrelaxation_sweep", "HMC", "HMCStep", "PseudofermionHMC", "metropolis", "select_chains", "Level", "integrate", "SCHEMES",
           "OMELYAN_LAMBDA", "EuclideanSpace", "LieGroupSpace", "FlowMetropolis", "FlowMCMCState",
           "FlowMCMCStep", "FlowHMC", "PulledBackAction", "FlowHMCMixture", "MixtureStep",
           "SelfLearningHMC",
           "effective_network", "network_parameter_names", "train_effective_action"]
