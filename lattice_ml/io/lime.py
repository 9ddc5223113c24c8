"""LIME (Lattice QCD Interchange Message Encapsulation) records: reader and writer.

A LIME file is a sequence of records; each record is a 144-byte header, the data, and zero bytes
that pad the data to a multiple of 8 bytes. The header (all integers big-endian)::

    offset  size  content
    0       4     magic number 0x456789ab
    4       2     LIME version (1)
    6       2     flags: bit 15 MB (message begin), bit 14 ME (message end), other bits 0
    8       8     data length in bytes (without the padding)
    16      128   record type, ASCII, NUL-padded (e.g. "ildg-binary-data")

Records are grouped into messages: the first record of a message has MB set, the last ME.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterable

from ._common import GaugeFileError, file_size, read_exactly

__all__ = ["LIME_MAGIC", "LIME_VERSION", "LIME_HEADER_BYTES", "LimeRecord", "is_lime",
           "scan_lime", "read_lime_data", "lime_header", "write_lime_records"]

LIME_MAGIC = 0x456789AB
LIME_VERSION = 1
LIME_HEADER_BYTES = 144
_TYPE_BYTES = 128
_MB = 1 << 15
_ME = 1 << 14
_HEAD = struct.Struct(">IHHq")


@dataclass(frozen=True)
class LimeRecord:
    """One record of a LIME file: its type, where its data start, their length, and flags."""

    type: str
    offset: int
    length: int
    mb: bool
    me: bool
    version: int = LIME_VERSION


def is_lime(head: bytes) -> bool:
    """Whether the first bytes of a file are a LIME magic number."""
    return len(head) >= 4 and struct.unpack(">I", head[:4])[0] == LIME_MAGIC


def _pad(n: int) -> int:
    return (-n) % 8


def scan_lime(path) -> list[LimeRecord]:
    """All records of the LIME file ``path`` (headers only; data are read on request).

    Raises :class:`~._common.GaugeFileError` for a bad magic number or version, reserved flag
    bits, a record whose data run past the end of the file (truncated), or stray bytes after
    the last record.
    """
    path = str(path)
    size = file_size(path)
    records: list[LimeRecord] = []
    pos = 0
    with open(path, "rb") as fh:
        while pos < size:
            n = len(records)
            head = read_exactly(fh, LIME_HEADER_BYTES, f"LIME record {n} header at offset {pos}",
                                path)
            magic, version, flags, length = _HEAD.unpack_from(head)
            if magic != LIME_MAGIC:
                raise GaugeFileError(f"{path}: LIME record {n} at offset {pos}: magic number "
                                     f"0x{magic:08x}, expected 0x{LIME_MAGIC:08x}")
            if version != LIME_VERSION:
                raise GaugeFileError(f"{path}: LIME record {n} at offset {pos}: version "
                                     f"{version}, expected {LIME_VERSION}")
            if flags & ~(_MB | _ME):
                raise GaugeFileError(f"{path}: LIME record {n} at offset {pos}: reserved flag "
                                     f"bits set (flags 0x{flags:04x})")
            rtype = head[16:].split(b"\0", 1)[0].decode("ascii", errors="replace")
            start = pos + LIME_HEADER_BYTES
            if length < 0 or start + length > size:
                raise GaugeFileError(
                    f"{path}: LIME record {n} '{rtype}' declares {length} bytes of data but "
                    f"only {size - start} remain (file truncated)")
            records.append(LimeRecord(rtype, start, length, bool(flags & _MB),
                                      bool(flags & _ME), version))
            pos = start + length + _pad(length)
            if pos > size:  # a last record without its padding: accepted
                pos = size
            fh.seek(pos)
    return records


def read_lime_data(path, record: LimeRecord) -> bytes:
    """The data bytes of ``record`` of the file ``path``."""
    with open(path, "rb") as fh:
        fh.seek(record.offset)
        return read_exactly(fh, record.length, f"LIME record '{record.type}'", str(path))


def lime_header(rtype: str, length: int, mb: bool, me: bool) -> bytes:
    """The 144-byte header of a record of type ``rtype`` with ``length`` data bytes."""
    name = rtype.encode("ascii")
    if len(name) >= _TYPE_BYTES:
        raise ValueError(f"LIME record type {rtype!r} longer than {_TYPE_BYTES - 1} characters")
    flags = (_MB if mb else 0) | (_ME if me else 0)
    return _HEAD.pack(LIME_MAGIC, LIME_VERSION, flags, length) + name.ljust(_TYPE_BYTES, b"\0")


def write_lime_records(fh: BinaryIO, records: Iterable[tuple[str, bytes, bool, bool]]) -> None:
    """Write records ``(type, data, MB, ME)`` to the binary file object ``fh``, each padded
    to a multiple of 8 bytes."""
    for rtype, data, mb, me in records:
        fh.write(lime_header(rtype, len(data), mb, me))
        fh.write(data)
        fh.write(b"\0" * _pad(len(data)))
