"""Gauge fields: paths and staples, Wilson and improved actions with forces, observables."""

from .action import (RECTANGLE_COEFFICIENTS, GaugeAction, gauge_force, plaquette_field,
                     staple_field, staples)
from .paths import link, loop_shapes, loops_through_link, shift_by, transport

__all__ = ["GaugeAction", "RECTANGLE_COEFFICIENTS", "gauge_force", "plaquette_field",
           "staple_field", "staples", "link",
           "loop_shapes", "loops_through_link", "shift_by", "transport"]
