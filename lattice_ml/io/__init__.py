"""Gauge-configuration formats (NERSC, ILDG/LIME, openQCD), HDF5 ensembles and checkpoints.

* :func:`read_gauge`, :func:`write_gauge`, :func:`inspect_gauge`, :func:`detect_format`: every
  format through one interface, links in the library layout ``[batch, D, *sites, N, N]``;
* :class:`Ensemble`: HDF5 file of configurations, histories and run metadata (appendable);
* per-format modules :mod:`.nersc`, :mod:`.ildg` (with :mod:`.lime`), :mod:`.openqcd`,
  :mod:`.hdf5`; atomic writes in :mod:`.atomic`;
* checkpoints of long runs in :mod:`.checkpoint`.

See docs/io.md for the layouts and the index maps.
"""

from ._common import GaugeFileError, GaugeFileInfo, HeaderCheck
from .atomic import atomic_open_binary, atomic_write_bytes
from .formats import (FORMATS, detect_format, format_from_extension, inspect_gauge,
                      read_gauge, write_gauge)
from .hdf5 import Ensemble, write_ensemble
from .ildg import read_ildg, scidac_checksum, write_ildg
from .lime import LimeRecord, scan_lime
from .nersc import nersc_checksum, read_nersc, write_nersc
from .openqcd import read_openqcd, write_openqcd

__all__ = [
    "GaugeFileError", "GaugeFileInfo", "HeaderCheck",
    "atomic_open_binary", "atomic_write_bytes",
    "FORMATS", "detect_format", "format_from_extension", "inspect_gauge", "read_gauge",
    "write_gauge",
    "Ensemble", "write_ensemble",
    "read_nersc", "write_nersc", "nersc_checksum",
    "read_ildg", "write_ildg", "scidac_checksum", "LimeRecord", "scan_lime",
    "read_openqcd", "write_openqcd",
]

try:  # checkpoints (lattice_ml/io/checkpoint.py) are written alongside
    from .checkpoint import (Checkpoint, CheckpointError, load_checkpoint,
                             load_training_checkpoint, save_checkpoint,
                             save_training_checkpoint)
except ModuleNotFoundError as exc:  # pragma: no cover - only while checkpoint.py is absent
    if exc.name != f"{__name__}.checkpoint":
        raise
else:
    __all__ += ["Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint",
                "save_training_checkpoint", "load_training_checkpoint"]
