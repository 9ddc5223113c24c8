"""Imported by :mod:`lattice_ml.dispatch` on the first dispatch: imports every kernel module,
whose ``@register`` decorators fill the dispatch table. Importing compiles nothing (Numba
compiles a kernel on its first call)."""

import importlib

# one module per operator family; a module missing from an install is simply not registered
KERNEL_MODULES = ("phi4", "wilson", "staggered", "gauge", "stout", "flow_conv", "gauge_flow")

for _name in KERNEL_MODULES:
    try:
        importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__package__}.{_name}":
            raise
