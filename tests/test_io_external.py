"""Files written by an independent code (SIMULATeQCD, via AnalysisToolbox's test data) read with
every stored check passing, and the two formats give the same links."""

from pathlib import Path

import numpy as np
import pytest

from lattice_ml.gauge.observables import average_plaquette
from lattice_ml.groups import check_links
from lattice_ml.io import inspect_gauge, read_gauge

DATA = Path(__file__).parent / "data" / "simulateqcd"
NERSC = DATA / "nersc.l8t4b3360"
ILDG = DATA / "ildg.l8t4b3360"

pytestmark = pytest.mark.skipif(not NERSC.exists(), reason="test data not in this checkout")


def test_nersc_header_checks_pass_and_plaquette_is_reproduced():
    U, info = inspect_gauge(NERSC)
    assert info.format == "nersc" and info.lattice == (4, 8, 8, 8) and info.N == 3
    assert info.checks and not info.failed
    U = read_gauge(NERSC)
    assert U.shape == (1, 4, 4, 8, 8, 8, 3, 3) and U.dtype == np.complex128
    check_links(U, 3)
    stored = float(info.header["PLAQUETTE"])
    assert abs(float(average_plaquette(U)[0]) - stored) < 1e-9  # header has 10 digits


def test_ildg_scidac_checksums_pass_and_links_equal_the_nersc_file():
    U_ildg, info = inspect_gauge(ILDG)
    assert info.format == "ildg" and info.lattice == (4, 8, 8, 8)
    assert info.checks and not info.failed
    np.testing.assert_allclose(read_gauge(ILDG), read_gauge(NERSC), rtol=0, atol=1e-14)
