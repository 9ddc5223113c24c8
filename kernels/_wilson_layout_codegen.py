"""Source generator for the Wilson hopping term in the two kernel-internal layouts:
**lanes** (CPU SIMD, :mod:`.wilson_simd`) and **structure of arrays** (CUDA, :mod:`.wilson_soa`).

The arithmetic is that of :mod:`._dirac_codegen` (DeGrand-Rossi spin projection, two SU(3)
mat-vecs per hop, 1320 flops per site; the same projection tables and the same helpers
``mv`` / ``mvd`` / ``third_row``); only the addressing differs. One emitter writes the eight
hops for a caller-supplied address of "real k of the neighbour spinor of hop h" and "real k of
the link of hop h", so that both layouts share one body:

* **lanes** (``lanes_site_source``): every array is a sequence of *vectors* of ``W`` reals,
  the lane axis innermost; the body is one ``for l in range(W)`` loop over the lanes with no
  branch inside, which is what LLVM's loop vectoriser needs (``W`` is a run-time value so that
  LLVM does not unroll the loop away before vectorising it). A hop's neighbour vector is read
  in place, or, at a sub-lattice edge, from a copy with its lanes permuted (made before the lane
  loop). Links are *doubled*: every outer site stores its 8 hop links (``U_mu(x)`` and
  ``U_mu(x - mu)``, the latter with its lanes already permuted), so that a site reads all its
  links from one place and the kernel permutes only spinors.
* **soa** (``soa_site_source``): every real of a spinor or link is a plane of ``V`` reals
  over the sites, in even/odd site order (index ``p * V/2 + site // 2`` with ``p`` the
  site's parity and ``site`` the lexicographic index), one CUDA thread per site: consecutive
  threads read consecutive addresses.

Hop ``h = 2 mu + (0 forward, 1 backward)`` throughout. What the lanes body needs to be
vectorised (unsigned indices, ``noalias``, lane shuffles as an LLVM intrinsic, each measured) is
in docs/kernels.md, "Kernel-internal layouts".
"""

from __future__ import annotations

import functools
import math

from ._dirac_codegen import _PROJ, _RECON, _Emitter, _helpers, _jit, _times, helpers_source

__all__ = ["emit_wilson_hops", "lanes_site_source", "soa_site_source", "build"]

N_HOPS = 8
SPINOR_REALS = 24


def emit_wilson_hops(e: _Emitter, psi, link, phase, R: int, indent: int, hops=range(8)):
    """Emit the ``hops`` (default all eight) into the accumulators ``a{s}{c}r/i`` (spin s,
    colour c; the first use assigns unless ``e.defined`` holds the name).

    ``psi(h, k)``: expression of real ``k`` (``(s * 3 + c) * 2 + re/im``) of the neighbour
    spinor of hop ``h``; ``link(h, k)``: real ``k`` (``(row * 3 + col) * 2 + re/im``) of its
    link, ``R`` rows stored (2: the third rebuilt); ``phase(h)``: the expression multiplying the
    half spinor of the time hops (``h`` = 0, 1), or None. ``msgn`` and ``sgn`` must be defined.
    """
    for mu in range(4):
        for fwd in (True, False):
            h = 2 * mu + (0 if fwd else 1)
            if h not in hops:
                continue
            c = "msgn" if fwd else "sgn"  # projector 1 + c gamma_mu
            e(f"# hop {h}: direction {mu}, {'forward' if fwd else 'backward'}", indent)
            for s in range(2):
                low, coef = _PROJ[mu][s]
                for col in range(3):
                    qr, qi = _times(coef, psi(h, 6 * low + 2 * col), psi(h, 6 * low + 2 * col + 1))
                    e(f"h{s}{col}r = {psi(h, 6 * s + 2 * col)} + {c} * {qr}", indent)
                    e(f"h{s}{col}i = {psi(h, 6 * s + 2 * col + 1)} + {c} * {qi}", indent)
            if mu == 0 and phase is not None:
                e(f"ph = {phase(h)}", indent)
                for s in range(2):
                    for col in range(3):
                        e(f"h{s}{col}r = ph * h{s}{col}r", indent)
                        e(f"h{s}{col}i = ph * h{s}{col}i", indent)
            for k in range(6 * R):
                e(f"v{k} = {link(h, k)}", indent)
            if R == 2:
                e("v12, v13, v14, v15, v16, v17 = third_row("
                  + ", ".join(f"v{k}" for k in range(12)) + ")", indent)
            e("u = (" + ", ".join(f"v{k}" for k in range(18)) + ")", indent)
            for s in range(2):
                args = ", ".join(f"h{s}{col}{ri}" for col in range(3) for ri in "ri")
                outs = ", ".join(f"w{s}{col}{ri}" for col in range(3) for ri in "ri")
                e(f"{outs} = {'mv' if fwd else 'mvd'}(u, {args})", indent)
            for s in range(2):
                for col in range(3):
                    e.acc(f"a{s}{col}r", f"w{s}{col}r", indent)
                    e.acc(f"a{s}{col}i", f"w{s}{col}i", indent)
            for s in range(2):
                src, coef = _RECON[mu][s]
                for col in range(3):
                    qr, qi = _times(coef, f"w{src}{col}r", f"w{src}{col}i")
                    e.acc(f"a{s + 2}{col}r", f"{c} * {qr}", indent)
                    e.acc(f"a{s + 2}{col}i", f"{c} * {qi}", indent)


def _accumulator(k: int) -> str:
    s, r = divmod(k, 6)
    return f"a{s}{r // 2}{'ri'[r % 2]}"


# outer coordinates of the lanes layout, per direction
_OC = ("ot", "ox", "oy", "oz")
_OL = ("LT", "LX", "LY", "LZ")
_ON = ("NT", "NX", "NY", "NZ")


# The hops of each lane loop of the lanes body: two loops of four. One loop of all eight hops
# spilled more and was slower (8^4 float64, one thread: 264 ns/site against 135 with two loops
# and 141 with three).
HOP_GROUPS = ((0, 1, 2, 3), (4, 5, 6, 7))


def lanes_site_source(R: int, W: int, name: str = "lanes_site") -> str:
    """Source of ``name(U, P, S, O, PH, dims, b, ot, ox, oy, oz, sgn, half)``: the
    Wilson hop at all ``W`` lanes of the outer site ``(ot, ox, oy, oz)`` of batch entry ``b``.

    Flat real arrays (the layouts of :mod:`.wilson_simd`): ``U`` doubled links
    ``[Bu, Vo, 8, R, 3, 2, W]``, ``P`` and ``O`` spinors ``[B., Vo, 4, 3, 2, W]``, ``S`` a
    scratch of ``8 * 24 * W`` reals (the lane-permuted neighbours at sub-lattice edges),
    ``PH[8 * W]`` the time-boundary factors per lane (four rows of (forward, backward) factors:
    neither, forward, backward, both boundaries crossed from this time slice),
    ``dims = (B, Bu, Bp, W, LT, LX, LY, LZ, NT, NX, NY, NZ)`` (outer extents ``L*``, lanes per
    direction ``N*``). ``permute{h}(S, so, P, po)`` (one per hop, :func:`lane_permuter`) copies
    the 24 vectors of a neighbour spinor with its lanes permuted across a sub-lattice edge."""
    e = _Emitter()
    e(f"def {name}(U, P, S, O, PH, dims, b, ot, ox, oy, oz, sgn, half):", 0)
    e("B, Bu, Bp, W, LT, LX, LY, LZ, NT, NX, NY, NZ = dims")
    e("bu = b if Bu > 1 else 0")
    e("bp = b if Bp > 1 else 0")
    e("Vo = LT * LX * LY * LZ")
    e("SW = 24 * W")
    e("msgn = -sgn")
    for mu in range(4):
        for fwd in (True, False):
            h = 2 * mu + (0 if fwd else 1)
            o, L, n = _OC[mu], _OL[mu], _ON[mu]
            if fwd:
                e(f"n{h} = {o} + 1")
                e(f"e{h} = n{h} == {L}")
                e(f"if e{h}:")
                e(f"n{h} = 0", 2)
            else:
                e(f"n{h} = {o} - 1")
                e(f"e{h} = n{h} < 0")
                e(f"if e{h}:")
                e(f"n{h} = {L} - 1", 2)
            coords = list(_OC)
            coords[mu] = f"n{h}"
            e(f"q{h} = (bp * Vo + ((({coords[0]} * LX + {coords[1]}) * LY + {coords[2]}) * LZ"
              f" + {coords[3]})) * SW")
            e(f"if e{h} and {n} > 1:")   # lanes rotate across the sub-lattice edge
            e(f"permute{h}(S, {h * SPINOR_REALS * W}, P, q{h})", 2)
            e(f"s{h} = S", 2)
            e(f"q{h} = {h} * SW", 2)
            e("else:")
            e(f"s{h} = P", 2)
    # time-boundary factors per lane, PH[pr : pr + 2W] = (forward hop, backward hop): row 1 on the
    # last outer time slice, row 2 on the first, row 3 both (LT = 1), row 0 neither
    e("pr = ((1 if ot == LT - 1 else 0) + (2 if ot == 0 else 0)) * 2 * W")
    e(f"uo = (bu * Vo + ((ot * LX + ox) * LY + oy) * LZ + oz) * {8 * 6 * R} * W")
    e("oo = (b * Vo + ((ot * LX + ox) * LY + oy) * LZ + oz) * SW")
    # lane loops of a few hops each (HOP_GROUPS), the partial sums kept in O between them
    groups = HOP_GROUPS
    for gi, hops in enumerate(groups):
        first, last = gi == 0, gi == len(groups) - 1
        e("for l in range(W):")
        e.defined.clear()
        if not first:
            for k in range(SPINOR_REALS):
                e(f"{_accumulator(k)} = O[u64(oo + {k * W} + l)]", 2)
                e.defined.add(_accumulator(k))
        emit_wilson_hops(
            e,
            psi=lambda h, k: f"s{h}[u64(q{h} + {k * W} + l)]",
            link=lambda h, k: f"U[u64(uo + {(h * 6 * R + k) * W} + l)]",
            phase=lambda h: f"PH[u64(pr + {0 if h == 0 else W} + l)]",
            R=R, indent=2, hops=hops)
        for k in range(SPINOR_REALS):
            value = f"half * {_accumulator(k)}" if last else _accumulator(k)
            e(f"O[u64(oo + {k * W} + l)] = {value}", 2)
    return "\n".join(e.lines) + "\n"


def soa_site_source(R: int, name: str = "soa_site") -> str:
    """Source of ``name(U, P, O, dims, b, t, x, y, z, p, sgn, tbc, half)``: the Wilson hop at
    the site ``(t, x, y, z)`` of parity ``p`` of batch entry ``b``.

    Flat real arrays (the layouts of :mod:`.wilson_soa`): ``U`` links ``[Bu, 4, R, 3, 2, V]``,
    ``P`` and ``O`` spinors ``[B., 4, 3, 2, V]``, the site axis in even/odd order;
    ``dims = (B, Bu, Bp, T, X, Y, Z)``; ``tbc`` the factor of hops across the time boundary."""
    e = _Emitter()
    e(f"def {name}(U, P, O, dims, b, t, x, y, z, p, sgn, tbc, half):", 0)
    e("B, Bu, Bp, T, X, Y, Z = dims")
    e("bu = b if Bu > 1 else 0")
    e("bp = b if Bp > 1 else 0")
    e("V = T * X * Y * Z")
    e("Vh = V // 2")
    e("msgn = -sgn")
    e("one = half + half")
    e("q = 1 - p")
    e("here = p * Vh + (((t * X + x) * Y + y) * Z + z) // 2")
    base = ["t", "x", "y", "z"]
    ext = ["T", "X", "Y", "Z"]
    for mu in range(4):
        c, L = base[mu], ext[mu]
        e(f"{c}f = {c} + 1 if {c} + 1 < {L} else 0")
        e(f"{c}b = {c} - 1 if {c} > 0 else {L} - 1")
        for fwd in (True, False):
            h = 2 * mu + (0 if fwd else 1)
            nb = list(base)
            nb[mu] = c + ("f" if fwd else "b")
            e(f"n{h} = q * Vh + ((({nb[0]} * X + {nb[1]}) * Y + {nb[2]}) * Z + {nb[3]}) // 2")
    e("phf = tbc if t == T - 1 else one")
    e("phb = tbc if t == 0 else one")
    e("pb = bp * 24")
    e(f"ub = bu * {4 * 6 * R}")
    emit_wilson_hops(
        e,
        psi=lambda h, k: f"P[(pb + {k}) * V + n{h}]",
        link=lambda h, k: f"U[(ub + {(h // 2) * 6 * R + k}) * V + {'here' if h % 2 == 0 else f'n{h}'}]",
        phase=lambda h: "phf" if h == 0 else "phb",
        R=R, indent=1)
    e("ob = b * 24")
    for k in range(SPINOR_REALS):
        e(f"O[(ob + {k}) * V + here] = half * {_accumulator(k)}")
    return "\n".join(e.lines) + "\n"


def lane_permuter(perm: tuple[int, ...], n_vectors: int = SPINOR_REALS):
    """A Numba intrinsic ``permute(S, so, P, po)``: ``S[so + k W + l] = P[po + k W + perm[l]]``
    for ``k < n_vectors``, ``l < W = len(perm)``, as one vector load, one ``shufflevector``
    (a constant lane permutation: a register shuffle on AVX/AVX-512) and one vector store per
    ``k``. Written in LLVM IR because Numba has no vector type: the same copy as a scalar loop
    took as long as the rest of an 8^4 hop. ``S`` and ``P`` are 1D C-contiguous float arrays,
    ``so`` and ``po`` element offsets."""
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    W = len(perm)

    @intrinsic
    def permute(typingctx, S, so, P, po):
        sig = types.void(S, types.intp, P, types.intp)

        def codegen(context, builder, signature, args):
            s_arr, s_off, p_arr, p_off = args
            sty, _, pty, _ = signature.args
            sdata = context.make_array(sty)(context, builder, s_arr).data
            pdata = context.make_array(pty)(context, builder, p_arr).data
            elem = context.get_value_type(sty.dtype)
            vty = ir.VectorType(elem, W)
            mask = ir.Constant(ir.VectorType(ir.IntType(32), W), list(perm))
            align = context.get_abi_sizeof(elem)
            i64 = ir.IntType(64)
            for k in range(n_vectors):
                src = builder.gep(pdata, [builder.add(p_off, ir.Constant(i64, k * W))])
                v = builder.load(builder.bitcast(src, vty.as_pointer()), align=align)
                v = builder.shuffle_vector(v, v, mask)
                dst = builder.gep(sdata, [builder.add(s_off, ir.Constant(i64, k * W))])
                builder.store(v, builder.bitcast(dst, vty.as_pointer()), align=align)
            return context.get_dummy_value()

        return sig, codegen

    return permute


def lane_permutations(lanes) -> tuple[tuple[int, ...], ...]:
    """``perm[h][l]``: at a sub-lattice edge of hop ``h`` (``2 mu`` forward, ``2 mu + 1``
    backward), lane ``l`` reads lane ``perm[h][l]`` of the neighbouring outer site: the lane
    with ``l_mu`` plus (forward) or minus (backward) one, modulo ``N_mu``, lane index
    ``l = ((l_t NX + l_x) NY + l_y) NZ + l_z``."""
    import itertools
    coords = list(itertools.product(*(range(n) for n in lanes)))
    index = {c: i for i, c in enumerate(coords)}
    perm = []
    for mu in range(4):
        for step in (1, -1):
            row = []
            for c in coords:
                d = list(c)
                d[mu] = (d[mu] + step) % lanes[mu]
                row.append(index[tuple(d)])
            perm.append(tuple(row))
    return tuple(perm)


@functools.lru_cache(maxsize=None)
def build(layout: str, R: int, target: str, lanes: tuple = ()):
    """The site body of ``layout`` ("lanes" with ``lanes = (NT, NX, NY, NZ)``, or "soa") for
    links of ``R`` stored rows, compiled
    for ``target`` ("cpu": ``njit`` with FMA contraction for the lanes body; "cuda": a device
    function), calling the helpers of :mod:`._dirac_codegen` compiled for the same target."""
    if layout == "lanes":
        import numba
        from numba import njit
        jit = njit(fastmath=FASTMATH, cache=False, _nrt=False)
        body_jit = njit(fastmath=FASTMATH, cache=False, _nrt=False,
                        pipeline_class=_noalias_compiler())
        # the helpers again, with the same flags (they are inlined into the lane loop)
        ns: dict = {}
        exec(compile(helpers_source(), "<lattice_ml.kernels generated helpers>", "exec"), ns)
        ns = {name: jit(ns[name]) for name in ("third_row", "mv", "mvd")}
        for h, perm in enumerate(lane_permutations(lanes)):
            ns[f"permute{h}"] = lane_permuter(perm)
        ns["u64"] = numba.uint64
        src = lanes_site_source(R, math.prod(lanes))
    else:
        jit = _jit(target)
        ns = dict(_helpers(target))
        src = soa_site_source(R)
    exec(compile(src, f"<lattice_ml.kernels generated {layout}_site R={R}>", "exec"), ns)
    return (body_jit if layout == "lanes" else jit)(ns[f"{layout}_site"])


@functools.lru_cache(maxsize=None)
def _noalias_compiler():
    """Numba's default compiler with ``noalias`` on every array argument of the compiled
    function (Numba sets the same flag on the bodies of ``prange`` loops whose arrays it proves
    distinct). The lanes body writes only its output ``O``, which the driver allocates, so no
    other argument refers to its memory; with this promise LLVM vectorises the lane loops
    without run-time overlap checks (measured: the checks took more instructions than the
    vector arithmetic)."""
    from numba.core.compiler import Compiler

    class NoAliasCompiler(Compiler):
        def define_pipelines(self):
            self.state.flags.noalias = True
            return super().define_pipelines()

    return NoAliasCompiler


# LLVM fast-math flags of the lanes body: only 'contract' (a * b + c may become one fused
# multiply-add, rounded once instead of twice). No reassociation, no assumptions about NaN,
# infinities or signed zeros: the result differs from the scalar kernel by round-off only, and
# non-finite inputs propagate as they do there.
FASTMATH = {"contract"}
