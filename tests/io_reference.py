"""Independent reference code for the gauge-file tests: configurations, and plaquettes, link
traces and checksums computed with plain loops over sites in a file's own coordinates (never
with the library's readers, index maps or observables)."""

from __future__ import annotations

import itertools
import struct
import zlib

import numpy as np

from lattice_ml.backend import RandomStreams, to_numpy
from lattice_ml.groups import random_near_identity

# library site shape (L0 = t, L1 = x, L2 = y, L3 = z): all extents different and even, so a
# mixed-up axis shows and openQCD's odd-point order works
SHAPE = (4, 2, 6, 8)


def random_links(seed: int = 1, shape=SHAPE, eps: float = 0.7, batch: int = 1) -> np.ndarray:
    """SU(3) links ``[batch, 4, *shape, 3, 3]`` complex128, far from the identity."""
    rng = RandomStreams(seed, batch)
    return to_numpy(random_near_identity(rng, (4,) + tuple(shape), 3, eps))


def file_links_xyzt(U: np.ndarray) -> dict:
    """Links of ``U[0]`` keyed by NERSC/ILDG file coordinates: ``{((t, z, y, x), k): 3x3}`` with
    file direction k = x, y, z, t (0..3), per the documented map
    ``F[t, z, y, x, k] = U[0, (k + 1) % 4, t, x, y, z]``."""
    _, D, Lt, Lx, Ly, Lz = U.shape[:6]
    links = {}
    for t, x, y, z in itertools.product(range(Lt), range(Lx), range(Ly), range(Lz)):
        for k in range(4):
            links[((t, z, y, x), k)] = U[0, (k + 1) % 4, t, x, y, z]
    return links


def plaquette_loop_xyzt(links: dict, dims_tzyx) -> float:
    """<Re Tr U_p>/3 over all sites and the 6 planes, from links in file coordinates
    (t, z, y, x) with directions k = x, y, z, t; periodic."""
    # the step of direction k in the (t, z, y, x) coordinate tuple
    axis_of = {0: 3, 1: 2, 2: 1, 3: 0}

    def step(site, k):
        s = list(site)
        a = axis_of[k]
        s[a] = (s[a] + 1) % dims_tzyx[a]
        return tuple(s)

    total, count = 0.0, 0
    for site in itertools.product(*(range(n) for n in dims_tzyx)):
        for mu in range(4):
            for nu in range(mu + 1, 4):
                p = (links[(site, mu)] @ links[(step(site, mu), nu)]
                     @ links[(step(site, nu), mu)].conj().T @ links[(site, nu)].conj().T)
                total += np.trace(p).real / 3
                count += 1
    return total / count


def link_trace_loop(links: dict) -> float:
    """<Re Tr U>/3 over all links."""
    return sum(np.trace(m).real / 3 for m in links.values()) / len(links)


def words_sum(raw: bytes, endian: str) -> int:
    """Sum of 32-bit words mod 2^32, by struct, one word at a time."""
    fmt = (">" if endian == "big" else "<") + "I"
    total = 0
    for i in range(0, len(raw), 4):
        total = (total + struct.unpack(fmt, raw[i:i + 4])[0]) & 0xFFFFFFFF
    return total


def scidac_sums_loop(raw: bytes, site_bytes: int) -> tuple[int, int]:
    """SciDAC (suma, sumb) by a plain loop with Python integers."""
    suma = sumb = 0
    for r in range(len(raw) // site_bytes):
        c = zlib.crc32(raw[r * site_bytes:(r + 1) * site_bytes]) & 0xFFFFFFFF
        a, b = r % 29, r % 31
        suma ^= ((c << a) | (c >> (32 - a))) & 0xFFFFFFFF
        sumb ^= ((c << b) | (c >> (32 - b))) & 0xFFFFFFFF
    return suma, sumb


def pack_matrix(m: np.ndarray, fmt: str, rows: int = 3) -> bytes:
    """Row-major (Re, Im) of the first ``rows`` rows of a 3x3 matrix, struct format ``fmt``."""
    out = b""
    for i in range(rows):
        for j in range(3):
            out += struct.pack(fmt, m[i, j].real) + struct.pack(fmt, m[i, j].imag)
    return out
