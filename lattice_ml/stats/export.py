"""Monte Carlo histories handed to pyerrors (Joswig, Kuberski, Kuhlmann, Neuendorf, Comput.
Phys. Commun. 288 (2023) 108750), with the replica structure of the chains.

A history of this library is ``[chain, time, *obs_shape]`` (``history.npz`` of a run: one array
per observable; see docs/cli.md). pyerrors names a replica ``"<ensemble>|<replica>"``; each chain
becomes one replica ``"<ensemble>|r<chain>"`` and its measurements carry the configuration
numbers ``first, first + every, ...`` (``idl``), so observables measured on different
schedules of the same run combine correctly in pyerrors. pyerrors' own Γ-method then runs on
them (its default ``S = 2``; :func:`lattice_ml.stats.gamma_method` with
``convention="pyerrors"`` gives the same numbers, tested in tests/test_stats.py).

pyerrors is an optional dependency: it is imported when a function here is called.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_pyerrors"]


def _pyerrors():
    try:
        import pyerrors
    except ImportError as exc:
        raise ImportError("to_pyerrors needs pyerrors, which is not installed: "
                          "pip install pyerrors") from exc
    return pyerrors


def to_pyerrors(history: Any, ensemble: str = "lattice_ml", *, discard: int = 0,
                every: int = 1, first: int = 1):
    """pyerrors ``Obs`` of a history with one replica per chain.

    Parameters
    ----------
    history : array ``[time]`` (one chain), ``[chain, time]``, or ``[chain, time, *obs_shape]``
        (for instance a correlator ``[chain, time, T]``); any array type (converted with
        ``numpy.asarray``; pass host data).
    ensemble : the ensemble name; replicas are ``"<ensemble>|r<chain>"`` (one chain: the
        replica ``"<ensemble>|r0"`` too, so runs with 1 and several chains combine).
    discard : measurements dropped at the start of every chain (thermalisation cut).
    every, first : configuration number of measurement ``i`` (after the cut) is
        ``first + (discard + i) * every`` (pyerrors' ``idl``).

    Returns
    -------
    one ``pyerrors.Obs`` for a history without ``obs_shape``, else a NumPy object array of
    shape ``obs_shape`` holding one ``Obs`` per component.
    """
    h = np.asarray(history, dtype=np.float64)
    if h.ndim == 1:
        h = h[None]
    if h.ndim < 2:
        raise ValueError(f"a history is [time] or [chain, time, ...], got shape {h.shape}")
    if not (isinstance(discard, (int, np.integer)) and 0 <= discard < h.shape[1]):
        raise ValueError(f"discard must be an integer in [0, {h.shape[1]}), got {discard!r}")
    if not (isinstance(every, (int, np.integer)) and every >= 1):
        raise ValueError(f"every must be a positive integer, got {every!r}")
    if "|" in ensemble:
        raise ValueError(f"the ensemble name may not contain '|' (pyerrors' replica separator): "
                         f"{ensemble!r}")
    pe = _pyerrors()
    h = h[:, discard:]
    n_chain, n_meas = h.shape[:2]
    names = [f"{ensemble}|r{c}" for c in range(n_chain)]
    idl = [range(first + discard * every, first + (discard + n_meas) * every, every)] * n_chain
    if h.ndim == 2:
        return pe.Obs(list(h), names, idl=idl)
    obs_shape = h.shape[2:]
    flat = h.reshape(n_chain, n_meas, -1)
    out = np.empty(flat.shape[2], dtype=object)
    for k in range(flat.shape[2]):
        out[k] = pe.Obs(list(flat[:, :, k]), names, idl=idl)
    return out.reshape(obs_shape)
