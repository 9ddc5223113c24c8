"""Real scalar φ⁴ theory: actions, forces, observables."""

from .observables import (abs_magnetization, binder_cumulant, magnetization,
                          momentum_space_propagator, phi2, second_moment_correlation_length,
                          susceptibility, two_point_function)
from .phi4 import Phi4Action, free_propagator, phi4_force

__all__ = [
    "Phi4Action", "free_propagator", "phi4_force", "magnetization", "abs_magnetization", "phi2",
    "two_point_function", "momentum_space_propagator", "susceptibility", "binder_cumulant",
    "second_moment_correlation_length",
]
