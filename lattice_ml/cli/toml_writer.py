"""The TOML text of a resolved ``lattice-ml`` configuration (``config.toml``, ``lattice-ml
config``): two levels, tables of scalars and lists, each key with its one line of documentation
from the schema (:mod:`lattice_ml.cli.schema`). Reading and validating is
:mod:`lattice_ml.cli.config`; this module only writes.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .schema import SCHEMA, resolved_params

__all__ = ["dump_toml", "toml_value", "toml_string"]


def toml_string(s: str) -> str:
    """A TOML basic string (double quotes; escapes for quotes, backslashes and controls)."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(value: Any, strict: bool = True) -> str:
    """``value`` as TOML text; ``strict=False`` also writes inline tables and falls back to
    ``repr`` (for error messages), ``strict=True`` raises ``TypeError`` instead."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v, strict) for v in value) + "]"
    if isinstance(value, dict) and not strict:
        return "{" + ", ".join(f"{k} = {toml_value(v, False)}" for k, v in value.items()) + "}"
    if strict:
        raise TypeError(f"cannot write {type(value).__name__} as a TOML value")
    return repr(value)


def dump_toml(config: Mapping[str, Mapping[str, Any]], comments: bool = True) -> str:
    """A resolved configuration as TOML text (two levels: tables of scalars and lists).

    With ``comments`` each key gets its one-line documentation from the schema. The text
    parses back (``tomllib.loads``) to ``config``.
    """
    lines: list[str] = []
    for section, values in config.items():
        if lines:
            lines.append("")
        table = SCHEMA.get(section)
        if comments and table is not None and table.doc:
            lines.append(f"# {table.doc}")
        lines.append(f"[{section}]")
        params = resolved_params(section, values)[0] if section in SCHEMA else {}
        for key, value in values.items():
            line = f"{key} = {toml_value(value)}"
            p = params.get(key)
            if comments and p is not None and p.doc:
                line += f"  # {p.doc}"
            lines.append(line)
    return "\n".join(lines) + "\n"
