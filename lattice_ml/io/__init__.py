"""Gauge-configuration formats (NERSC, ILDG/LIME, openQCD), HDF5 ensembles and checkpoints.

* :func:`read_gauge`, :func:`write_gauge`, :func:`inspect_gauge`, :func:`detect_format`: every
  format through one interface, links in the library layout ``[batch, D, *sites, N, N]``
  (run checkpoints are read too); writers refuse NaN/inf and links outside U(1)/SU(N), readers
  report (and with ``check=True`` refuse) them;
* :class:`Ensemble`: HDF5 file of configurations, histories and run metadata (appendable);
* per-format modules :mod:`.nersc`, :mod:`.ildg` (with :mod:`.lime`), :mod:`.openqcd`,
  :mod:`.hdf5`; atomic writes in :mod:`.atomic`;
* checkpoints of long runs in :mod:`.checkpoint`.

See docs/io.md for the layouts and the index maps.
"""

from ._common import GaugeFileError, GaugeFileInfo, HeaderCheck
from .atomic import atomic_open_binary, atomic_write_bytes
from .checkpoint import (Checkpoint, CheckpointError, load_checkpoint, load_training_checkpoint,
                         save_checkpoint, save_training_checkpoint)
from .formats import (FORMATS, READABLE_FORMATS, detect_format, format_from_extension,
                      inspect_gauge, read_gauge, write_gauge)
from .hdf5 import Ensemble, write_ensemble
from .ildg import read_ildg, scidac_checksum, write_ildg
from .lime import LimeRecord, scan_lime
from .nersc import nersc_checksum, read_nersc, write_nersc
from .openqcd import read_openqcd, write_openqcd

__all__ = [
    "GaugeFileError", "GaugeFileInfo", "HeaderCheck",
    "atomic_open_binary", "atomic_write_bytes",
    "FORMATS", "READABLE_FORMATS", "detect_format", "format_from_extension", "inspect_gauge",
    "read_gauge", "write_gauge",
    "Ensemble", "write_ensemble",
    "read_nersc", "write_nersc", "nersc_checksum",
    "read_ildg", "write_ildg", "scidac_checksum", "LimeRecord", "scan_lime",
    "read_openqcd", "write_openqcd",
    "Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint",
    "save_training_checkpoint", "load_training_checkpoint",
]
