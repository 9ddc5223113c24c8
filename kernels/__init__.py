"""Numba kernels (CPU ``njit`` and CUDA), installed as ``lattice_ml.kernels``.

The array-API code in :mod:`lattice_ml` is the reference implementation; kernels are a fast path
chosen by :mod:`lattice_ml.dispatch` and always cross-checked against it in the tests.
"""
