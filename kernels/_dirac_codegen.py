"""Source generator for the per-site bodies of the 4D SU(3) Wilson and staggered hopping terms.

One straight-line Python function per operator is generated here and compiled twice: with
``numba.njit`` (called from a ``prange`` loop, :mod:`.wilson`, :mod:`.staggered`) and with
``numba.cuda.jit(device=True)`` (called by one CUDA thread per site). Generating the code keeps
every spin projection, colour product and sign a compile-time constant (no local arrays, no
complex constants, no branches on the direction), which is what a memory-bound stencil needs.

Arrays are the **real views** of the library's complex layouts (the last axis of length N
becomes 2N: ``re, im`` interleaved), so all arithmetic is real and keeps the dtype
(float32 for complex64, float64 for complex128):

* ``U[Bu, 4, T, X, Y, Z, R, 6]``: links, ``R = 3`` rows, or ``R = 2`` (12-real compression: the
  third row is rebuilt as ``conj(row0 x row1)``, exact for SU(3));
* ``P[Bp, T, X, Y, Z, S, 6]``: the input field (``S = 4`` Wilson, ``S = 1`` staggered);
* ``O[B, T, X, Y, Z, S, 6]``: the output (written at the site, never read).

The site bodies take these arrays **flattened** (1D, C order) with ``dims = (B, Bu, Bp, R, T,
X, Y, Z)`` and index them with explicit offsets: one-index loads keep Numba's compile time
down (it grows quickly with the number of multi-index expressions).

Batch: ``Bu`` and ``Bp`` are 1 or ``B`` (links of batch 1 act on every field, as in the
reference).

Wilson (DeGrand-Rossi basis, :mod:`lattice_ml.fermions.gamma`): every ``gamma_mu`` is
``[[0, B_mu], [B_mu^dag, 0]]`` in 2x2 spin blocks, so ``(1 + c gamma_mu) psi`` is determined by
the half spinor ``h = psi_up + c B_mu psi_low`` (two colour vectors):
``(1 + c gamma_mu) psi = [h, c B_mu^dag h]``. The link multiplies only ``h`` (2 SU(3)
mat-vecs instead of 4), which gives the standard 1320 flops per site.
"""

from __future__ import annotations

import functools

# B_mu psi_low = (coef0 * psi[low0], coef1 * psi[low1]); coefficients in {1, -1, 1j, -1j}
_PROJ = {
    0: ((2, 1), (3, 1)),
    1: ((3, 1j), (2, 1j)),
    2: ((3, -1), (2, 1)),
    3: ((2, 1j), (3, -1j)),
}
# B_mu^dag w = (coef0 * w[i0], coef1 * w[i1]) for the half-spinor components w[0], w[1]
_RECON = {
    0: ((0, 1), (1, 1)),
    1: ((1, -1j), (0, -1j)),
    2: ((1, 1), (0, -1)),
    3: ((0, -1j), (1, 1j)),
}


def _times(coef, re: str, im: str) -> tuple[str, str]:
    """(re, im) of coef * (re + i im) for coef in {1, -1, 1j, -1j}, as expressions."""
    if coef == 1:
        return re, im
    if coef == -1:
        return f"(-{re})", f"(-{im})"
    if coef == 1j:
        return f"(-{im})", re
    if coef == -1j:
        return im, f"(-{re})"
    raise ValueError(coef)


class _Emitter:
    def __init__(self):
        self.lines: list[str] = []
        self.defined: set[str] = set()

    def __call__(self, line: str, indent: int = 1):
        self.lines.append("    " * indent + line)

    def acc(self, name: str, expr: str, indent: int = 1):
        """``name += expr`` (first use assigns)."""
        if name in self.defined:
            self(f"{name} = {name} + {expr}", indent)
        else:
            self(f"{name} = {expr}", indent)
            self.defined.add(name)


_SITE_HEADER = """\
    B, Bu, Bp, R, T, X, Y, Z = dims
    bu = b if Bu > 1 else 0
    bp = b if Bp > 1 else 0
    compressed = R == 2
    tf = t + 1 if t + 1 < T else 0
    tb = t - 1 if t > 0 else T - 1
    xf = x + 1 if x + 1 < X else 0
    xb = x - 1 if x > 0 else X - 1
    yf = y + 1 if y + 1 < Y else 0
    yb = y - 1 if y > 0 else Y - 1
    zf = z + 1 if z + 1 < Z else 0
    zb = z - 1 if z > 0 else Z - 1
    one = half + half
    phf = tbc if t == T - 1 else one
    phb = tbc if t == 0 else one
    V = T * X * Y * Z
    LS = R * 6"""


def _coords(mu: int, fwd: bool) -> tuple[str, str]:
    """(linear site index of the neighbour, linear site index of the link) for the hop in
    direction mu; site index ``((t X + x) Y + y) Z + z``."""
    base = ["t", "x", "y", "z"]
    nb = list(base)
    nb[mu] = base[mu] + ("f" if fwd else "b")
    lin = "((({} * X + {}) * Y + {}) * Z + {})"
    here = lin.format(*base)
    there = lin.format(*nb)
    return there, (here if fwd else there)


def _load_link(e: _Emitter, mu: int, where: str):
    """The 18 reals ``u`` (a tuple) of the link U[bu, mu, where] at flat offset ``lo``; the third
    row from the helper ``third_row`` if compressed. (Arrays are never passed to the helpers:
    Numba would reference-count them on every call.)"""
    e(f"lo = ((bu * 4 + {mu}) * V + {where}) * LS")
    names = [f"v{k}" for k in range(12)]
    for k in range(12):
        e(f"v{k} = U[lo + {k}]")
    e("if compressed:")
    e(f"v12, v13, v14, v15, v16, v17 = third_row({', '.join(names)})", 2)
    e("else:")
    for k in range(12, 18):
        e(f"v{k} = U[lo + {k}]", 2)
    e("u = (" + ", ".join(f"v{k}" for k in range(18)) + ")")


def _call_matvec(e: _Emitter, src: str, dst: str, dagger: bool):
    """dst{c}r/i = (U or U^dag) src for the colour vector src{c}r/i via the helper mv / mvd."""
    args = ", ".join(f"{src}{c}{ri}" for c in range(3) for ri in "ri")
    outs = ", ".join(f"{dst}{c}{ri}" for c in range(3) for ri in "ri")
    e(f"{outs} = {'mvd' if dagger else 'mv'}(u, {args})")


def helpers_source() -> str:
    """Source of the helpers the site bodies call (compiled for the same target):

    * ``third_row(12 reals of rows 0 and 1)``: the 6 reals of ``conj(row0 x row1)``, the third
      row of an SU(3) matrix (12-real link compression);
    * ``mv(u, h...)`` / ``mvd(u, h...)``: ``U h`` / ``U^dag h`` for a colour vector given as 6
      reals, returning 6 reals.

    Keeping them out of the site bodies makes Numba type and lower each only once (the compile
    time of a straight-line body grows with its number of operations); LLVM inlines them.
    """
    e = _Emitter()
    args = ", ".join(f"u{r}{c}{ri}" for r in range(2) for c in range(3) for ri in "ri")
    e(f"def third_row({args}):", 0)
    # row2_j = conj(row0_k row1_l - row0_l row1_k), (j, k, l) cyclic
    for j, k, l in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        e(f"u2{j}r = (u0{k}r * u1{l}r - u0{k}i * u1{l}i) - (u0{l}r * u1{k}r - u0{l}i * u1{k}i)")
        e(f"u2{j}i = (u0{l}r * u1{k}i + u0{l}i * u1{k}r) - (u0{k}r * u1{l}i + u0{k}i * u1{l}r)")
    e("return (" + ", ".join(f"u2{c}{ri}" for c in range(3) for ri in "ri") + ")")
    for dagger in (False, True):
        hs = ", ".join(f"h{c}{ri}" for c in range(3) for ri in "ri")
        e(f"def {'mvd' if dagger else 'mv'}(u, {hs}):", 0)
        outs = []
        for r in range(3):
            re_terms, im_terms = [], []
            for c in range(3):
                a, b = (c, r) if dagger else (r, c)
                k = 2 * (3 * a + b)
                ur, ui = f"u[{k}]", f"u[{k + 1}]"
                hr, hi = f"h{c}r", f"h{c}i"
                if dagger:  # conj(u) h
                    re_terms.append(f"{ur} * {hr} + {ui} * {hi}")
                    im_terms.append(f"{ur} * {hi} - {ui} * {hr}")
                else:
                    re_terms.append(f"{ur} * {hr} - {ui} * {hi}")
                    im_terms.append(f"{ur} * {hi} + {ui} * {hr}")
            e(f"w{r}r = " + " + ".join(f"({t})" for t in re_terms))
            e(f"w{r}i = " + " + ".join(f"({t})" for t in im_terms))
            outs += [f"w{r}r", f"w{r}i"]
        e(f"return ({', '.join(outs)})")
    return "\n".join(e.lines) + "\n"


def wilson_site_source(name: str = "wilson_site") -> str:
    """Source of ``name(U, P, O, b, t, x, y, z, sgn, tbc, half)``: writes
    ``O[b, t, x, y, z] = (1/2) sum_mu [(1 - sgn g_mu) U_mu(x) P(x + mu)
    + (1 + sgn g_mu) U_mu(x - mu)^dag P(x - mu)]`` with the time-boundary factor ``tbc``
    (-1 antiperiodic, +1 periodic) on hops across t = T-1 -> 0. ``sgn``, ``tbc`` and ``half``
    (= 0.5) are reals of the arrays' dtype."""
    e = _Emitter()
    e(f"def {name}(U, P, O, dims, b, t, x, y, z, sgn, tbc, half):", 0)
    e.lines.extend(_SITE_HEADER.splitlines())
    e("msgn = -sgn")
    for mu in range(4):
        for fwd in (True, False):
            nbs, where = _coords(mu, fwd)
            c = "msgn" if fwd else "sgn"  # projector 1 + c gamma_mu
            e(f"# direction {mu}, {'forward' if fwd else 'backward'}: (1 {'-' if fwd else '+'}"
              f" sgn g_{mu}) U{'' if fwd else '^dag'} psi")
            # half spinor h{s}{col}: h_s = psi_s + c * coef * psi_low
            e(f"po = (bp * V + {nbs}) * 24")
            for s in range(2):
                low, coef = _PROJ[mu][s]
                for col in range(3):
                    pr, pi = f"P[po + {6 * low + 2 * col}]", f"P[po + {6 * low + 2 * col + 1}]"
                    qr, qi = _times(coef, pr, pi)
                    e(f"h{s}{col}r = P[po + {6 * s + 2 * col}] + {c} * {qr}")
                    e(f"h{s}{col}i = P[po + {6 * s + 2 * col + 1}] + {c} * {qi}")
            if mu == 0:  # time boundary factor
                ph = "phf" if fwd else "phb"
                for s in range(2):
                    for col in range(3):
                        e(f"h{s}{col}r = {ph} * h{s}{col}r")
                        e(f"h{s}{col}i = {ph} * h{s}{col}i")
            _load_link(e, mu, where)
            for s in range(2):
                _call_matvec(e, f"h{s}", f"w{s}", dagger=not fwd)
            # upper spins += w; lower spins += c * B^dag w
            for s in range(2):
                for col in range(3):
                    e.acc(f"a{s}{col}r", f"w{s}{col}r")
                    e.acc(f"a{s}{col}i", f"w{s}{col}i")
            for s in range(2):
                src, coef = _RECON[mu][s]
                for col in range(3):
                    qr, qi = _times(coef, f"w{src}{col}r", f"w{src}{col}i")
                    e.acc(f"a{s + 2}{col}r", f"{c} * {qr}")
                    e.acc(f"a{s + 2}{col}i", f"{c} * {qi}")
    e("oo = (b * V + ((t * X + x) * Y + y) * Z + z) * 24")
    for s in range(4):
        for col in range(3):
            e(f"O[oo + {6 * s + 2 * col}] = half * a{s}{col}r")
            e(f"O[oo + {6 * s + 2 * col + 1}] = half * a{s}{col}i")
    return "\n".join(e.lines) + "\n"


def staggered_site_source(name: str = "staggered_site") -> str:
    """Source of ``name(U, P, O, b, t, x, y, z, sgn, tbc, half)``: writes
    ``O[b, t, x, y, z] = (sgn/2) sum_mu eta_mu(x) [U_mu(x) P(x + mu) - U_mu(x - mu)^dag P(x - mu)]``
    with ``eta_mu(x) = (-1)^(x_0 + ... + x_{mu-1})`` and the time-boundary factor ``tbc``."""
    e = _Emitter()
    e(f"def {name}(U, P, O, dims, b, t, x, y, z, sgn, tbc, half):", 0)
    e.lines.extend(_SITE_HEADER.splitlines())
    coords = ["t", "x", "y", "z"]
    for mu in range(4):
        if mu == 0:
            e("eta = one")
        else:
            e(f"eta = one if ({' + '.join(coords[:mu])}) % 2 == 0 else -one")
        for fwd in (True, False):
            nbs, where = _coords(mu, fwd)
            e(f"# direction {mu}, {'forward' if fwd else 'backward'}")
            e(f"po = (bp * V + {nbs}) * 6")
            for col in range(3):
                e(f"h0{col}r = P[po + {2 * col}]")
                e(f"h0{col}i = P[po + {2 * col + 1}]")
            if mu == 0:
                ph = "phf" if fwd else "phb"
                for col in range(3):
                    e(f"h0{col}r = {ph} * h0{col}r")
                    e(f"h0{col}i = {ph} * h0{col}i")
            _load_link(e, mu, where)
            _call_matvec(e, "h0", "w0", dagger=not fwd)
            for col in range(3):
                for ri in "ri":
                    name_ = f"d{col}{ri}"
                    if fwd:
                        e(f"{name_} = w0{col}{ri}")
                    else:
                        e(f"{name_} = {name_} - w0{col}{ri}")
        for col in range(3):
            e.acc(f"a0{col}r", f"eta * d{col}r")
            e.acc(f"a0{col}i", f"eta * d{col}i")
    e("hs = sgn * half")
    e("oo = (b * V + ((t * X + x) * Y + y) * Z + z) * 6")
    for col in range(3):
        e(f"O[oo + {2 * col}] = hs * a0{col}r")
        e(f"O[oo + {2 * col + 1}] = hs * a0{col}i")
    return "\n".join(e.lines) + "\n"


@functools.lru_cache(maxsize=None)
def _helpers(target: str) -> dict:
    """The helpers compiled for ``target`` ("cpu" or "cuda"), shared by every site body."""
    ns: dict = {}
    exec(compile(helpers_source(), "<lattice_ml.kernels generated helpers>", "exec"), ns)
    jit = _jit(target)
    return {name: jit(ns[name]) for name in ("third_row", "mv", "mvd")}


def _jit(target: str):
    if target == "cpu":
        from numba import njit
        # _nrt=False: the bodies allocate nothing; without reference counting their array
        # arguments are not incref'ed/decref'ed at every branch (measured: 5 calls per site)
        return njit(fastmath=False, cache=False, _nrt=False)
    from numba import cuda
    return cuda.jit(device=True)


@functools.lru_cache(maxsize=None)
def build_site(kind: str, target: str):
    """The site body ``kind`` ("wilson" or "staggered") for ``target`` ("cpu": ``numba.njit``,
    "cuda": ``numba.cuda.jit(device=True)``), calling the shared helpers of that target."""
    ns: dict = dict(_helpers(target))
    src = wilson_site_source() if kind == "wilson" else staggered_site_source()
    exec(compile(src, f"<lattice_ml.kernels generated {kind}_site>", "exec"), ns)
    return _jit(target)(ns[f"{kind}_site"])
