"""Gauge fields: paths and staples, Wilson and improved actions with forces, observables,
clover field strength and topological charge, the Wilson (gradient) flow with t0 and w0.

Modules: :mod:`.paths` (links, transports, loop shapes), :mod:`.action` (actions, staples,
forces), :mod:`.observables` (plaquette, rectangle, Wilson and Polyakov loops, 2D charge),
:mod:`.topology` (clover field strength, 4D charge), :mod:`.wilson_flow` (the gradient flow,
energy density, t0, w0). Every public name is also importable from ``lattice_ml.gauge``.
"""

from .action import (RECTANGLE_COEFFICIENTS, GaugeAction, gauge_force, plaquette_field,
                     staple_field, staples)
from .observables import (average_plaquette, average_rectangle, creutz_ratio,
                          plaquette_per_plane, polyakov_loop, topological_charge_2d, wilson_loop)
from .paths import (link, loop_shapes, loops_through_link, plaquette_loop, rectangle_loops,
                    shift_by, transport)
from .topology import (clover_field_strength, clover_field_strengths, clover_leaves, planes,
                       topological_charge_clover, topological_charge_density_clover,
                       trace_product)
from .wilson_flow import (RK3_COEFFICIENTS, FlowResult, energy_density, energy_density_clover,
                          energy_density_plaquette, euler_step, flow, flow_generator, flow_step,
                          flow_time_derivative, rk3_step, t0, w0, wilson_flow)

__all__ = [
    # action
    "GaugeAction", "RECTANGLE_COEFFICIENTS", "gauge_force", "plaquette_field", "staple_field",
    "staples",
    # paths
    "link", "shift_by", "transport", "loops_through_link", "plaquette_loop", "rectangle_loops",
    "loop_shapes",
    # observables
    "plaquette_per_plane", "average_plaquette", "average_rectangle", "wilson_loop",
    "creutz_ratio", "polyakov_loop", "topological_charge_2d",
    # topology
    "clover_leaves", "clover_field_strength", "clover_field_strengths", "planes",
    "trace_product", "topological_charge_density_clover", "topological_charge_clover",
    # wilson_flow
    "RK3_COEFFICIENTS", "flow_generator", "euler_step", "rk3_step", "flow_step", "flow",
    "energy_density_plaquette", "energy_density_clover", "energy_density", "FlowResult",
    "wilson_flow", "t0", "w0", "flow_time_derivative",
]
