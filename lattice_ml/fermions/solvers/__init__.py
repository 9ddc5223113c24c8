"""Batch-aware Krylov solvers: CG, CGNR/CGNE, BiCGStab, multi-shift CG, mixed-precision CG,
flexible GMRES (right-preconditioned, restarted).

Operators and layouts
---------------------
An operator is a plain callable ``A(x) -> y`` acting on a batched array ``x[batch, ...]`` of any
trailing layout (for fermion fields ``[batch, *sites, spin, colour]``, complex) and returning an
array of the same shape and dtype. Inner products and norms are **per batch entry**: they sum over
all non-batch axes, and ``<a, b> = sum conj(a) b`` conjugates the first argument.

Batch semantics
---------------
Every batch entry is an independent linear system with its own Krylov recursion: its own scalars
(alpha, beta, ...), its own stopping test ``||r_b|| <= tol ||b_b||`` and its own iteration count.
The operator is always applied to the whole batch (a Dirac operator couples the entries of a
batch to their own gauge configurations, so the batch cannot be sliced behind its back); entries
that have converged are *frozen* with masks (``where``), so their iterates never change again and
the arithmetic of entry ``b`` is exactly that of a solve of entry ``b`` alone.

Every solver checks at the end the **true** residual ``b - A x`` (not the recursively updated
one). The CG-type solvers and BiCGStab restart an entry whose true residual is above the tolerance
from that true residual (counted in ``info.restarts``), so "converged" always refers to the true
residual.

Failures raise :class:`SolverError` naming the batch entry and the iteration (non-convergence
within ``maxiter``; breakdowns: a non-finite scalar, ``p^H A p <= 0`` in CG, vanishing ``rho`` or
``omega`` in BiCGStab). With ``raise_on_failure=False`` the solver freezes the failed entries,
finishes the others and returns; ``info.converged`` and ``info.breakdown`` say what happened.
A right-hand side (or start vector) with NaN or inf raises ``ValueError`` naming the entry.

The small per-entry scalars (norms, flags, histories) steer the loop from the host. CG, CGNR/CGNE,
multi-shift CG, BiCGStab and FGMRES take ``check_every``: the decisions of each iteration run on
the device with masks and the scalars of ``check_every`` iterations come back in one transfer
(default 1 for arrays in host memory, 10 on a device), with iterates and record independent of
it. All vector work stays in the array namespace of ``b``.

Solver-level layout hook: :func:`cg` solves an operator with a ``solver_layout(b)`` method (the
normal operators of ``WilsonDirac(..., layout="lanes")``) in its kernel's layout, converting
``b`` and the solution once (``_common.enter_layout``).
"""

from ._common import MixedInfo, MultiShiftInfo, SolverError, SolverInfo, norm2, vdot
from .bicgstab import bicgstab
from .cg import cg, cgne
from .fgmres import fgmres
from .mixed import cg_mixed
from .multishift import multishift_cg

__all__ = ["SolverError", "SolverInfo", "MultiShiftInfo", "MixedInfo", "cg", "cgne", "bicgstab",
           "multishift_cg", "cg_mixed", "fgmres", "vdot", "norm2"]
