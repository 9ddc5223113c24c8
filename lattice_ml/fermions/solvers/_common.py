"""What the solvers share: result records, the error, per-entry inner products and norms,
masks, input checks, the common start of every Krylov recursion, CG's step length, and the
bookkeeping of a single-shift solve (:class:`_Run`: active entries, breakdowns, history, the
true-residual check with its restart, the result record)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...backend import device_of, namespace, to_numpy


class SolverError(RuntimeError):
    """A solve failed: an entry did not converge within ``maxiter`` or the recursion broke down.

    Attributes
    ----------
    entries : list of int
        Batch entries that failed.
    iteration : int or None
        Iteration (of the first failed entry) at which the failure was detected.
    info : SolverInfo, MultiShiftInfo, MixedInfo or None
        What the solver knew when it stopped (``None`` for a breakdown raised immediately).
    """

    def __init__(self, message: str, entries=(), iteration=None, info=None):
        super().__init__(message)
        self.entries = list(entries)
        self.iteration = iteration
        self.info = info


@dataclass
class SolverInfo:
    """Result record of :func:`cg`, :func:`cgne` and :func:`bicgstab` (host NumPy arrays).

    Attributes
    ----------
    method : str
    tol : float
    iterations : int array ``[batch]``
        Iterations performed by each entry (an entry stops counting once it has converged).
    converged : bool array ``[batch]``
        ``True`` where the true relative residual reached ``tol``.
    residual : float array ``[batch]``
        Final **true** relative residual ``||b - A x|| / ||b||`` (of the original system for
        :func:`cgne`).
    history : float array ``[n_iter, batch]``
        Relative residual of the recursion after each iteration (frozen entries repeat their
        last value).
    matvecs : int
        Operator applications to the whole batch (``D`` and ``D^dagger`` counted separately).
    restarts : int array ``[batch]``
        Restarts from the true residual.
    breakdown : dict
        ``{entry: message}`` for entries stopped by a breakdown (only with
        ``raise_on_failure=False``).
    precond_calls : int
        Preconditioner applications to the whole batch (:func:`fgmres`; 0 for the others).
    host_syncs : int
        Device-to-host transfers of the recursion's scalars (one per ``check_every``
        iterations, plus the true-residual checks; :func:`cg` and :func:`cgne`).
    """

    method: str
    tol: float
    iterations: np.ndarray
    converged: np.ndarray
    residual: np.ndarray
    history: np.ndarray
    matvecs: int = 0
    restarts: np.ndarray | None = None
    breakdown: dict = field(default_factory=dict)
    precond_calls: int = 0
    host_syncs: int = 0

    @property
    def all_converged(self) -> bool:
        return bool(np.all(self.converged))

    def __repr__(self) -> str:
        return (f"SolverInfo(method={self.method!r}, tol={self.tol:g}, "
                f"iterations={self.iterations.tolist()}, converged={self.converged.tolist()}, "
                f"residual=[{', '.join(f'{v:.2e}' for v in self.residual)}], "
                f"matvecs={self.matvecs})")


@dataclass
class MultiShiftInfo:
    """Result record of :func:`multishift_cg` (host NumPy arrays).

    Attributes
    ----------
    shifts : float array ``[n_shift]``
    tol : float
    iterations : int array ``[n_shift, batch]``
        Shifted-CG iterations during which shift ``k`` of entry ``b`` was still updated.
    converged : bool array ``[n_shift, batch]``
        True relative residual of ``(A + sigma_k) x_k = b`` reached ``tol``.
    residual : float array ``[n_shift, batch]``
        Final true relative residuals.
    history : float array ``[n_iter, n_shift, batch]``
        Recursion residuals ``|zeta_k| ||r|| / ||b||`` after each iteration.
    matvecs : int
        Applications of ``A`` (shared iterations, refinement and the final residual checks).
    refine_iterations : int array ``[n_shift, batch]``
        Iterations of the plain-CG refinement (zero when the shifted solution was already good).
    host_syncs : int
        Reads of the shared recursion's scalars on the host (one per ``check_every``
        iterations).
    """

    shifts: np.ndarray
    tol: float
    iterations: np.ndarray
    converged: np.ndarray
    residual: np.ndarray
    history: np.ndarray
    matvecs: int = 0
    refine_iterations: np.ndarray | None = None
    host_syncs: int = 0

    @property
    def all_converged(self) -> bool:
        return bool(np.all(self.converged))


@dataclass
class MixedInfo:
    """Result record of :func:`cg_mixed` (host NumPy arrays).

    Attributes
    ----------
    tol, inner_tol : float
    outer_iterations : int array ``[batch]``
        Defect-correction cycles in which the entry was still being corrected.
    inner_iterations : int array ``[batch]``
        Low-precision CG iterations, summed over the cycles.
    converged : bool array ``[batch]``
    residual : float array ``[batch]``
        Final true relative residual, computed in high precision.
    history : float array ``[n_outer + 1, batch]``
        True relative residual (high precision) before the first and after every cycle.
    high_matvecs, low_matvecs : int
        Applications of ``A_high`` and ``A_low`` to the whole batch.
    inner_dtype : str
        dtype of the vectors the inner solves worked on.
    """

    tol: float
    inner_tol: float
    outer_iterations: np.ndarray
    inner_iterations: np.ndarray
    converged: np.ndarray
    residual: np.ndarray
    history: np.ndarray
    high_matvecs: int = 0
    low_matvecs: int = 0
    inner_dtype: str = ""

    @property
    def iterations(self) -> np.ndarray:
        """Total low-precision iterations per entry (alias of ``inner_iterations``)."""
        return self.inner_iterations

    @property
    def all_converged(self) -> bool:
        return bool(np.all(self.converged))


# ----------------------------------------------------------------------------------------------
# per-entry linear algebra
# ----------------------------------------------------------------------------------------------
def _is_complex(xp, x) -> bool:
    return xp.isdtype(x.dtype, "complex floating")


def _axes(x) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def vdot(a, b):
    """Per-entry inner product ``<a, b> = sum conj(a) b`` over all non-batch axes -> ``[batch]``."""
    xp = namespace(a, b)
    if _is_complex(xp, a):
        a = xp.conj(a)
    return xp.sum(a * b, axis=_axes(a))


def norm2(a):
    """Per-entry squared norm ``||a||^2`` (real) over all non-batch axes -> ``[batch]``."""
    xp = namespace(a)
    if _is_complex(xp, a):
        return xp.sum(xp.real(a) ** 2 + xp.imag(a) ** 2, axis=_axes(a))
    return xp.sum(a * a, axis=_axes(a))


def _col(xp, s, ndim: int):
    """``[batch]`` scalars reshaped to broadcast against ``[batch, ...]`` with ``ndim`` axes."""
    return xp.reshape(s, (s.shape[0],) + (1,) * (ndim - 1))


def _mask(xp, host_bool: np.ndarray, like):
    return xp.asarray(np.asarray(host_bool, dtype=bool), device=device_of(like))


def _host(*arrays) -> list[np.ndarray]:
    return [np.asarray(to_numpy(a)) for a in arrays]


DEVICE_CHECK_EVERY = 10
"""Default ``check_every`` of :func:`cg`, :func:`cgne` and :func:`multishift_cg` for arrays on a
device (CuPy, or array-api-strict's non-CPU devices that stand in for one in tests): the
recursion's scalars come back to the host once per this many iterations
(:func:`check_interval`)."""


def in_host_memory(x) -> bool:
    """Whether the array ``x`` lives in host memory, where reading a scalar back costs nothing:
    NumPy arrays, and array-api-strict arrays on its CPU device."""
    if isinstance(x, np.ndarray):
        return True
    from ...backend import backend_name
    if backend_name(namespace(x)) == "array_api_strict":
        return "CPU_DEVICE" in str(device_of(x))
    return False


def check_interval(b, check_every, callback=None, name: str = "solver") -> int:
    """How many iterations run between two reads of the recursion's scalars on the host, for
    the right-hand side ``b``.

    ``check_every=None`` gives 1 for arrays in host memory (:func:`in_host_memory`) and
    ``DEVICE_CHECK_EVERY`` otherwise; a ``callback`` needs every iteration (1). The iterates and
    the result record do not depend on it (an entry is frozen on the device at the iteration at
    which it converges, and the host replays the buffered iterations); only ``matvecs`` counts
    the up to ``check_every - 1`` idle iterations after the last entry has converged."""
    if callback is not None:
        return 1
    if check_every is None:
        return 1 if in_host_memory(b) else DEVICE_CHECK_EVERY
    if isinstance(check_every, bool) or not isinstance(check_every, (int, np.integer)) \
            or check_every < 1:
        raise ValueError(f"{name}: check_every must be a positive integer, got {check_every!r}")
    return int(check_every)


def enter_layout(A, b, x0=None, callback=None):
    """The solver-level layout hook: an operator ``A`` with a method ``solver_layout(b)`` that
    returns ``(inner, to, back)`` (e.g. ``WilsonDirac(..., layout="lanes").normal``) is solved
    in its kernel's layout: ``b`` and ``x0`` converted once with ``to``, ``inner`` applied to the
    converted arrays, the solution converted once with ``back`` (a ``callback`` gets it
    converted back at every call). Returns ``(A, b, x0, callback, back)``, ``back`` None when
    the operator has no hook or declines ``b`` (``solver_layout`` returned None), or ``x0``
    does not match ``b`` (the solver's own check then names it). Inner products and norms are
    sums over the same numbers in either layout, so the recursion is the same to round-off."""
    hook = getattr(A, "solver_layout", None)
    if hook is None or (x0 is not None and tuple(x0.shape) != tuple(b.shape)):
        return A, b, x0, callback, None
    lay = hook(b)
    if lay is None:
        return A, b, x0, callback, None
    inner, to, back = lay
    cb = None if callback is None else (lambda k, x, rel: callback(k, back(x), rel))
    return inner, to(b), (None if x0 is None else to(x0)), cb, back


def _check_rhs(xp, b, name: str, what: str = "right-hand side b"):
    if b.ndim < 1:
        raise ValueError(f"{name}: {what} must have a leading batch axis, got a 0-d array")
    if not xp.isdtype(b.dtype, ("real floating", "complex floating")):
        raise ValueError(f"{name}: {what} must be a floating array, got dtype {b.dtype}")
    bb = _host(norm2(b))[0]
    bad = np.flatnonzero(~np.isfinite(bb))
    if bad.size:
        raise ValueError(f"{name}: {what} has non-finite values (NaN or inf) in batch "
                         f"entr{'y' if bad.size == 1 else 'ies'} {', '.join(map(str, bad))}")
    return bb


def _prepare_x0(xp, b, x0, name):
    if x0 is None:
        return None
    if tuple(x0.shape) != tuple(b.shape):
        raise ValueError(f"{name}: x0 has shape {tuple(x0.shape)}, b has {tuple(b.shape)}")
    x0 = xp.astype(x0, b.dtype)
    _check_rhs(xp, x0, name, "start vector x0")
    return x0


def _entries(idx) -> str:
    idx = list(idx)
    return f"entr{'y' if len(idx) == 1 else 'ies'} {', '.join(map(str, idx))}"


def _fail_nonconverged(name, info, maxiter):
    bad = np.flatnonzero(~info.converged)
    brk = [e for e in bad if e in info.breakdown]
    slow = [e for e in bad if e not in info.breakdown]
    parts = []
    if slow:
        parts.append(
            f"batch {_entries(slow)} did not converge in {maxiter} iterations (true relative "
            f"residual {', '.join(f'{info.residual[e]:.3e}' for e in slow)} > tol {info.tol:g})")
    for e in brk:
        parts.append(info.breakdown[e])
    first = slow[0] if slow else brk[0]
    raise SolverError(f"{name}: " + "; ".join(parts), entries=list(bad),
                      iteration=int(info.iterations[first]), info=info)


def _initial(xp, A, b, x0, tol, name):
    """Common start of the single-shift solvers: the checked right-hand side, its squared norms
    ``bb`` (host, per entry), the stopping targets ``tol^2 |b|^2``, and the initial ``x`` and
    residual ``r`` (``x0`` given: ``r = b - A x0``, with ``x = 0`` for entries whose ``b = 0``).
    Returns ``(nd, nb, bb, zero_rhs, bb_safe, target2, x, r, matvecs)``."""
    nd = b.ndim
    bb = _check_rhs(xp, b, name)
    x0 = _prepare_x0(xp, b, x0, name)
    zero_rhs = bb == 0.0
    bb_safe = np.where(zero_rhs, 1.0, bb)
    target2 = (tol ** 2) * bb
    if x0 is None:
        return nd, b.shape[0], bb, zero_rhs, bb_safe, target2, xp.zeros_like(b), b, 0
    # b = 0 has the exact solution x = 0
    x = xp.where(_col(xp, _mask(xp, zero_rhs, b), nd), xp.zeros_like(b), x0)
    return nd, b.shape[0], bb, zero_rhs, bb_safe, target2, x, b - A(x), 1


def _stack_history(history, *shape):
    if history:
        return np.stack(history)
    return np.zeros((0,) + tuple(shape))


def _ratio(xp, ok, num, den):
    """``num / den`` per entry where ``ok`` (device bool ``[batch]``), 0 elsewhere (where not ok
    the denominator is replaced by 1, so nothing is divided by zero)."""
    return xp.where(ok, num / xp.where(ok, den, xp.ones_like(den)), xp.zeros_like(num))


def _cg_step(xp, p, Ap, rr_dev, act):
    """CG's step length ``alpha = <r, r> / <p, A p>`` per entry. Returns ``(pAp, ok, alpha)``:
    ``ok`` is ``act`` where ``p^H A p`` is positive and finite, ``alpha = 0`` elsewhere."""
    pAp = vdot(p, Ap)
    if _is_complex(xp, pAp):
        pAp = xp.real(pAp)
    ok = act & (pAp > 0) & xp.isfinite(pAp)
    return pAp, ok, _ratio(xp, ok, rr_dev, pAp)


class _Run:
    """Bookkeeping of a single-shift solve (:func:`cg`, :func:`cgne`, :func:`bicgstab`), per batch
    entry on the host: ``active`` entries, ``iters``, ``restarts``, breakdowns (``failed``,
    messages), the recursion's squared residual ``rr`` and its history, ``matvecs``; at the end
    the true-residual check (:meth:`restart`) and the result record (:meth:`finish`).

    A solver reads::

        x, r, run = _Run.start(xp, A, b, x0, tol, maxiter, raise_on_failure, name)
        ...; run.begin(rr)
        while True:
            while np.any(run.active):
                ...one iteration, run.break_down(entries, why) for its breakdowns...
                run.advance(ok, rr_new)
            restart = run.restart(A, x, restart_on_true_residual)
            if restart is None:
                break
            rt, redo = restart          # restart the entries ``redo`` from the true residual
            ...
        return run.finish(x)
    """

    def __init__(self, xp, b, name, tol, maxiter, raise_on_failure, initial):
        self.xp, self.b, self.name, self.tol, self.maxiter = xp, b, name, tol, maxiter
        self.raise_on_failure = raise_on_failure
        (self.nd, self.nb, self.bb, self.zero_rhs, self.bb_safe, self.target2,
         self.matvecs) = initial
        nb = self.nb
        self.iters = np.zeros(nb, dtype=np.int64)
        self.restarts = np.zeros(nb, dtype=np.int64)
        self.failed = np.zeros(nb, dtype=bool)          # breakdown: frozen for good
        self.breakdown: dict = {}
        self.history: list[np.ndarray] = []
        self.rr = self.bb.copy()
        self.active = np.zeros(nb, dtype=bool)
        self.rt2 = None
        self.host_syncs = 0
        self._act_dev = self._iters_dev = self._t2_dev = None

    @classmethod
    def start(cls, xp, A, b, x0, tol, maxiter, raise_on_failure, name):
        """:func:`_initial`: ``(x, r, run)`` with the start vector, its residual and the run."""
        nd, nb, bb, zero_rhs, bb_safe, target2, x, r, matvecs = _initial(xp, A, b, x0, tol, name)
        run = cls(xp, b, name, tol, maxiter, raise_on_failure,
                  (nd, nb, bb, zero_rhs, bb_safe, target2, matvecs))
        return x, r, run

    def begin(self, rr: np.ndarray) -> None:
        """Start the recursion with squared residuals ``rr`` (host ``[batch]``)."""
        self.rr = rr
        self.active = (rr > self.target2) & ~self.zero_rhs

    # -- the device side of the stopping rule (``check_every`` > 1) ---------------------------
    def device_active(self):
        """The host's ``active`` entries as a device mask, and the device copies of ``iters`` and
        of the targets that :meth:`device_advance` needs, taken from the host state (after
        :meth:`begin` or a restart; after a sync the device state already equals the host's
        replay, so nothing is uploaded)."""
        self._act_dev = self.mask(self.active)
        self._iters_dev = self.xp.asarray(self.iters, device=device_of(self.b))
        if self._t2_dev is None:
            self._t2_dev = self.xp.asarray(np.asarray(self.target2, dtype=np.float64),
                                           device=device_of(self.b))
        return self._act_dev

    def device_target2(self):
        """The stopping targets ``tol^2 |b|^2`` on the device (float64; after
        :meth:`device_active`)."""
        return self._t2_dev

    def device_advance(self, ok_dev, rr_dev, finite_dev):
        """The stopping rule of :meth:`advance` evaluated on the device, so that no value leaves
        it: entries ``ok_dev & finite_dev`` stay active while ``rr_dev`` (the recursion's
        squared residual, compared in float64 as on the host) is above the target and the
        iteration count below ``maxiter``. Returns the new device mask."""
        xp = self.xp
        self._iters_dev = self._iters_dev + xp.astype(self._act_dev, self._iters_dev.dtype)
        self._act_dev = (ok_dev & finite_dev & (xp.astype(rr_dev, xp.float64) > self._t2_dev)
                         & (self._iters_dev < self.maxiter))
        return self._act_dev

    def fetch(self, buffered):
        """The buffered per-iteration device scalars ``[(s_1, s_2, ...), ...]`` (each ``[batch]``,
        one real dtype) on the host in one transfer, as ``[iteration][scalar]`` host arrays."""
        if not buffered:
            return []
        xp = self.xp
        flat = xp.stack([v for it in buffered for v in it])
        self.host_syncs += 1
        host = _host(flat)[0]
        m = len(buffered[0])
        return [[host[i * m + j] for j in range(m)] for i in range(len(buffered))]

    def mask(self, host_bool):
        """A host ``[batch]`` bool as a device array."""
        return _mask(self.xp, host_bool, self.b)

    def col(self, s):
        """``[batch]`` scalars broadcast against the fields."""
        return _col(self.xp, s, self.nd)

    def break_down(self, entries, why) -> None:
        """Entries broken down at their current iteration, ``why(e)`` the reason: raise
        :class:`SolverError` (``raise_on_failure``) or record and freeze them."""
        for e in entries:
            msg = f"breakdown in batch entry {e} at iteration {int(self.iters[e])}: {why(e)}"
            if self.raise_on_failure:
                raise SolverError(f"{self.name}: {msg}", entries=[int(e)],
                                  iteration=int(self.iters[e]))
            self.breakdown[int(e)] = msg
            self.failed[e] = True

    def advance(self, ok: np.ndarray, rr_new: np.ndarray) -> np.ndarray:
        """End of an iteration: entries ``ok`` take the squared residuals ``rr_new`` and stay
        active while above tolerance and below ``maxiter``; returns the relative residuals."""
        self.rr = np.where(ok, rr_new, self.rr)
        self.active = ok & (self.rr > self.target2) & (self.iters < self.maxiter)
        self.history.append(np.sqrt(self.rr / self.bb_safe))
        return self.history[-1]

    def restart(self, A, x, restart: bool):
        """The true residual ``b - A x``. Returns ``None`` when no entry is to restart (all
        converged, broken down or out of iterations, or ``restart`` false), else ``(rt, redo)``:
        the true residual and the host mask of the entries restarting from it (already active
        again, counted in ``restarts``)."""
        rt = self.b - A(x)
        self.matvecs += 1
        self.rt2 = _host(norm2(rt))[0]
        self.host_syncs += 1
        redo = ((self.rt2 > self.target2) & ~self.failed & (self.iters < self.maxiter)
                & ~self.zero_rhs)
        if not (restart and np.any(redo)):
            return None
        self.rr = np.where(redo, self.rt2, self.rr)
        self.restarts += redo
        self.active = redo.copy()
        return rt, redo

    def finish(self, x, **extra):
        """``(x, SolverInfo)`` from the last true residual (``extra``: further fields of the
        record); raises on failure if asked to."""
        info = SolverInfo(method=self.name, tol=self.tol, iterations=self.iters,
                          converged=(self.rt2 <= self.target2) & ~self.failed,
                          residual=np.sqrt(self.rt2 / self.bb_safe),
                          history=_stack_history(self.history, self.nb), matvecs=self.matvecs,
                          restarts=self.restarts, breakdown=self.breakdown,
                          host_syncs=self.host_syncs, **extra)
        if self.raise_on_failure and not info.all_converged:
            _fail_nonconverged(self.name, info, self.maxiter)
        return x, info
