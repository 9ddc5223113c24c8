"""Configuration of the ``lattice-ml`` command: loading, merging and validation.

A configuration is a TOML document with the tables ``[lattice]``, ``[theory]``, ``[sampler]``,
``[flow]``, ``[run]``, ``[output]`` and ``[measure]``. What the tables hold is the schema
(:mod:`lattice_ml.cli.schema`: each key's type, default, range, allowed words and one line of
documentation; a *selector* key such as ``theory.name`` picks a variant sub-table with further
keys); combinations that are invalid together are the rules of :mod:`lattice_ml.cli.rules`; the
TOML text of a resolved configuration is written by :mod:`lattice_ml.cli.toml_writer`
(:func:`dump_toml`, re-exported here). This module reads a configuration and decides whether it
is valid.

Layers
------
:func:`load_config` merges, in this order, the schema defaults, the embedded ``default.toml``,
the user's file (if any) and the ``--set KEY=VALUE`` overrides, then validates the result and
returns a plain, fully resolved ``dict`` of ``dict``\\ s (every key of the chosen variants present,
ints where ints are expected, floats where floats are expected, ``lattice.shape`` a list of
ints). A layer that changes a selector (e.g. ``theory.form`` from ``"hopping"`` to
``"standard"``) discards the lower layers' keys that belong to the old variant, so a file or a
``--set`` that switches the form starts from the new form's defaults instead of inheriting
couplings that mean something else.

Every problem raises :class:`ConfigError` whose message names the dotted key, the problem and
where the value came from.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import ConfigError
from .schema import (RENAMED, REQUIRED, SAMPLERS, SCHEMA, THEORIES,  # noqa: F401
                     THEORY_DEFAULTS, Param, Table, iter_schema, resolved_params)
from .toml_writer import dump_toml, toml_value  # noqa: F401  (dump_toml: part of this API)

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "ConfigError",
    "Param",
    "Table",
    "SCHEMA",
    "THEORIES",
    "SAMPLERS",
    "DEFAULT_CONFIG_NAME",
    "default_config_text",
    "load_config",
    "parse_override",
    "merge_layers",
    "validate_config",
    "resolved_params",
    "iter_schema",
    "dump_toml",
]

DEFAULT_CONFIG_NAME = "default.toml"
_DEFAULT_SOURCE = "default.toml (embedded)"
_SET_SOURCE = "--set"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _suggest(word: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _range_text(p: Param) -> str:
    parts = []
    if p.minimum is not None:
        parts.append(f"{'>' if p.exclusive_minimum else '>='} {p.minimum:g}")
    if p.maximum is not None:
        parts.append(f"<= {p.maximum:g}")
    return " and ".join(parts)


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else toml_value(value, strict=False)


def _chain_text(chain: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{k} = {v!r}" for k, v in chain)


def _find_owner(table: Table, key: str, chain: tuple[tuple[str, str], ...] = ()):
    """The selector chain of the first variant of ``table`` that defines ``key``."""
    if table.selector is None:
        return None
    for word, variant in table.variants.items():
        here = chain + ((table.selector, word),)
        if key in variant.params:
            return here
        found = _find_owner(variant, key, here)
        if found is not None:
            return found
    return None


def _all_keys(table: Table) -> set[str]:
    return set(table.params) | table.owned_keys()


# --------------------------------------------------------------------------------------------
# checking single values
# --------------------------------------------------------------------------------------------

def _check_value(key: str, p: Param, value: Any, source: str | None,
                 table: Table | None = None) -> Any:
    """Type- and range-checked ``value`` of ``p`` (ints become floats for float keys)."""
    if p.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {_type_name(value)} {_fmt(value)}",
                              source)
        value = int(value)
    elif p.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number, got {_type_name(value)} {_fmt(value)}",
                              source)
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {value}", source)
    elif p.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false, got {_type_name(value)} "
                                   f"{_fmt(value)}", source)
    elif p.kind == "str":
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, got {_type_name(value)} {_fmt(value)}",
                              source)
        if p.choices is not None and value not in p.choices:
            planned = table.planned if table is not None else ()
            available = ", ".join(p.choices)
            if value in planned:
                raise ConfigError(key, f"{p.noun} {value!r} is not implemented yet "
                                       f"(available: {available})", source)
            guess = _suggest(value, tuple(p.choices) + tuple(planned))
            hint = f"; did you mean {guess!r}?" if guess else ""
            extra = f"; planned: {', '.join(planned)}" if planned else ""
            raise ConfigError(key, f"unknown {p.noun} {value!r}{hint} "
                                   f"(available: {available}{extra})", source)
        return value
    elif p.kind == "shape":
        return _check_shape(key, value, source)
    elif p.kind == "ints":
        if not isinstance(value, list) or any(isinstance(n, bool) or not isinstance(n, int)
                                               or n < 1 for n in value):
            raise ConfigError(key, f"must be a list of positive integers like [2, 1], got "
                                   f"{_type_name(value)} {_fmt(value)}", source)
        return [int(n) for n in value]
    else:  # pragma: no cover - schema error
        raise AssertionError(f"unknown parameter kind {p.kind!r}")

    lo, hi = p.minimum, p.maximum
    if lo is not None and (value <= lo if p.exclusive_minimum else value < lo):
        raise ConfigError(key, f"must be {_range_text(p)}, got {_fmt(value)}", source)
    if hi is not None and value > hi:
        raise ConfigError(key, f"must be {_range_text(p)}, got {_fmt(value)}", source)
    return value


def _check_shape(key: str, value: Any, source: str | None) -> list[int]:
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list of 2, 3 or 4 integers like [16, 16], got "
                               f"{_type_name(value)} {_fmt(value)}", source)
    if len(value) not in (2, 3, 4):
        raise ConfigError(key, f"must have 2, 3 or 4 extents (D = 2, 3 or 4), got "
                               f"{len(value)}: {_fmt(value)}", source)
    for i, n in enumerate(value):
        if isinstance(n, bool) or not isinstance(n, int):
            raise ConfigError(key, f"extent [{i}] must be an integer, got {_type_name(n)} "
                                   f"{_fmt(n)} in {_fmt(value)}", source)
        if n < 2:
            raise ConfigError(key, f"extent [{i}] = {n} must be a positive even integer >= 2 "
                                   f"in {_fmt(value)}", source)
        if n % 2:
            raise ConfigError(key, f"extent [{i}] = {n} is odd in {_fmt(value)}; every extent "
                                   "must be even (even/odd checkerboards need even extents)",
                              source)
    return [int(n) for n in value]


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------

def _unknown_top_level(name: str, value: Any, source: str | None) -> ConfigError:
    tables = ", ".join(SCHEMA)
    if isinstance(value, dict):
        guess = _suggest(name, SCHEMA)
        hint = f"; did you mean [{guess}]?" if guess else ""
        return ConfigError(f"[{name}]", f"unknown table{hint} (tables: {tables})", source)
    # a bare key outside any table: find the table it belongs in
    owners = [f"{s}.{k}" for s, _, k, _ in iter_schema() if k == name]
    if not owners:
        leaves = {k: f"{s}.{k}" for s, _, k, _ in iter_schema()}
        guess = _suggest(name, leaves)
        owners = [leaves[guess]] if guess else []
    hint = f"; did you mean {owners[0]}?" if owners else ""
    return ConfigError(name, f"unknown top-level key{hint} (every key belongs in one of the "
                             f"tables {tables})", source)


def _validate_section(section: str, values: Any, sources: Mapping[str, str]) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(section, f"must be a table [{section}], got {_type_name(values)} "
                                   f"{_fmt(values)}", sources.get(section))
    out: dict[str, Any] = {}
    table: Table | None = SCHEMA[section]
    chain: list[tuple[str, str]] = []
    allowed: dict[str, Param] = {}
    while table is not None:
        # the selector first, so that a bad theory name is reported before its keys
        order = list(table.params)
        if table.selector is not None:
            order.remove(table.selector)
            order.insert(0, table.selector)
        for key in order:
            p = table.params[key]
            dotted = f"{section}.{key}"
            if key in values:
                out[key] = _check_value(dotted, p, values[key], sources.get(dotted), table)
            elif p.default is REQUIRED:
                where = f" with {_chain_text(chain)}" if chain else ""
                raise ConfigError(dotted, f"is required{where}: {p.doc}")
            else:
                out[key] = copy.deepcopy(p.default)
        allowed.update(table.params)
        if table.selector is None:
            break
        word = out[table.selector]
        chain.append((table.selector, word))
        table = table.variants[word]

    for key in values:
        if key in allowed:
            continue
        dotted = f"{section}.{key}"
        src = sources.get(dotted)
        if dotted in RENAMED:
            raise ConfigError(dotted, f"is now called {RENAMED[dotted]} (same meaning); "
                                      f"rename the key", src)
        owner = _find_owner(SCHEMA[section], key)
        here = ", ".join(allowed)
        if owner is not None:
            common = 0
            while common < min(len(owner), len(chain)) and owner[common] == chain[common]:
                common += 1
            switch = ", ".join(f"{section}.{k} = {v!r}" for k, v in owner[common:])
            raise ConfigError(dotted, f"does not belong to [{section}] with {_chain_text(chain)}"
                                      f" (allowed keys: {here}); {key} needs {switch}", src)
        guess = _suggest(key, allowed)
        hint = f"; did you mean {section}.{guess}?" if guess else ""
        raise ConfigError(dotted, f"unknown key{hint} (allowed keys: {here})", src)

    # schema order: common keys first, then the variants' keys
    return {k: out[k] for k in allowed}


def validate_config(raw: Mapping[str, Any], sources: Mapping[str, str] | None = None
                    ) -> dict[str, Any]:
    """Check ``raw`` (a parsed, merged TOML document) and fill in defaults.

    ``sources`` maps dotted keys (and table names) to where their value came from, for the
    error messages. Returns a new plain dict; raises :class:`ConfigError`.
    """
    sources = sources or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(None, f"a configuration must be a TOML table, got {_type_name(raw)}")
    for name, value in raw.items():
        if name not in SCHEMA:
            raise _unknown_top_level(name, value, sources.get(name))
    config = {section: _validate_section(section, raw.get(section, {}), sources)
              for section in SCHEMA}
    for check in cross_key_checks(config):
        try:
            check(config)
        except ConfigError as exc:
            if exc.source is None and exc.key in sources:
                raise ConfigError(exc.key, exc.problem, sources[exc.key]) from None
            raise
    return config


def cross_key_checks(config: Mapping[str, Any]) -> list:
    """The rules (``Table.checks``) of every table and chosen variant of ``config``, in schema
    order (:mod:`lattice_ml.cli.rules`)."""
    found = []
    for section, table in SCHEMA.items():
        values = config.get(section, {})
        while table is not None:
            found.extend(c for c in table.checks if c not in found)
            if table.selector is None:
                break
            table = table.variants.get(values.get(table.selector))
    return found


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------

def _reset_variant_keys(table: Table, lower: dict, upper: Mapping) -> None:
    """Drop from ``lower`` the keys of a variant that ``upper`` switches away from."""
    sel = table.selector
    if sel is None:
        return
    low = lower.get(sel, table.params[sel].default)
    up = upper.get(sel, low)
    if up != low:
        for key in table.owned_keys():
            lower.pop(key, None)
    elif isinstance(low, str) and low in table.variants:
        _reset_variant_keys(table.variants[low], lower, upper)


def merge_layers(layers: Sequence[tuple[Mapping[str, Any], str]]
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge ``(document, source)`` layers, later ones winning.

    Returns ``(merged, sources)`` where ``sources`` maps each dotted key (and each table
    name) to the source of its value. A layer that changes a selector word (``theory.name``,
    ``theory.form``, ``sampler.name``) first discards the lower layers' keys that belong to
    the variant it switches away from.
    """
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for doc, src in layers:
        for name, value in doc.items():
            lower = merged.get(name)
            if isinstance(value, dict) and isinstance(lower, dict):
                table = SCHEMA.get(name)
                if table is not None:
                    before = set(lower)
                    _reset_variant_keys(table, lower, value)
                    for dropped in before - set(lower):
                        sources.pop(f"{name}.{dropped}", None)
                for key, v in value.items():
                    lower[key] = copy.deepcopy(v)
                    sources[f"{name}.{key}"] = src
            else:
                merged[name] = copy.deepcopy(value)
                sources[name] = src
                if isinstance(value, dict):
                    for key in value:
                        sources[f"{name}.{key}"] = src
    return merged, sources


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------

def default_config_text() -> str:
    """The text of the embedded ``default.toml`` (with its comments)."""
    return resources.files("lattice_ml.cli").joinpath(DEFAULT_CONFIG_NAME).read_text("utf-8")


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(None, f"{source}: invalid TOML: {exc}") from None


def _read_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(None, f"config file not found: {p}") from None
    except IsADirectoryError:
        raise ConfigError(None, f"config file {p} is a directory") from None
    except OSError as exc:
        raise ConfigError(None, f"cannot read config file {p}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(None, f"{p}: not UTF-8 text (byte {exc.start}); a TOML file must "
                                "be UTF-8") from None
    return _parse_toml(text, str(p))


_KEY_PART = re.compile(r"[A-Za-z0-9_-]+")
_BARE_WORD = re.compile(r"[A-Za-z0-9_./~][A-Za-z0-9_.+/~-]*")  # words and paths


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Parse one ``--set KEY=VALUE`` into ``((table, key), value)``.

    The value is read as a TOML value (``500``, ``0.5``, ``[8, 8]``, ``"text"``, ``true``); a
    bare word or path that is not valid TOML (``hopping``, ``array_api_strict``,
    ``runs/cfg.nersc``) is taken as a string.
    A one-part key must name a table and take an inline table (``lattice={shape=[8,8]}``).
    """
    where = f"--set {text!r}"
    if "=" not in text:
        raise ConfigError(None, f"{where}: expected KEY=VALUE, e.g. sampler.n_samples=500")
    key_text, value_text = text.split("=", 1)
    key_text, value_text = key_text.strip(), value_text.strip()
    parts = tuple(key_text.split("."))
    if not key_text or not all(_KEY_PART.fullmatch(part) for part in parts):
        raise ConfigError(None, f"{where}: the key must be TABLE.KEY, e.g. "
                                "sampler.n_samples=500")
    if len(parts) > 2:
        raise ConfigError(None, f"{where}: keys have two parts, TABLE.KEY "
                                f"(like sampler.n_samples), got {key_text!r}")
    if not value_text:
        raise ConfigError(key_text, f"{where}: empty value")
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if _BARE_WORD.fullmatch(value_text):
            value = value_text
        else:
            raise ConfigError(key_text, f"{where}: the value is not a valid TOML value "
                                        f"({exc}); quote strings, write lists as [8, 8]"
                              ) from None
    if len(parts) == 1 and not (parts[0] in SCHEMA and isinstance(value, dict)):
        raise _unknown_top_level(parts[0], value, _SET_SOURCE)
    return parts, value


def _overrides_layer(overrides: Iterable[str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for text in overrides:
        parts, value = parse_override(text)
        if len(parts) == 1:
            layer.setdefault(parts[0], {})
            if not isinstance(layer[parts[0]], dict):  # pragma: no cover - defensive
                layer[parts[0]] = {}
            layer[parts[0]].update(value)
        else:
            table, key = parts
            slot = layer.setdefault(table, {})
            if not isinstance(slot, dict):  # pragma: no cover - defensive
                slot = layer[table] = {}
            slot[key] = value
    return layer


def _schema_defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section in SCHEMA:
        params, _ = resolved_params(section, {})
        out[section] = {k: copy.deepcopy(p.default) for k, p in params.items()
                        if p.default is not REQUIRED}
    return out


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Load, merge and validate a configuration.

    Parameters
    ----------
    path : str, Path or None
        A TOML file; ``None`` runs the embedded ``default.toml`` alone. A file only needs the
        keys that differ from the embedded default.
    overrides : iterable of str
        ``KEY=VALUE`` strings as given to ``--set`` (see :func:`parse_override`), applied last
        and in order.

    Returns
    -------
    dict
        ``{"lattice": {...}, "theory": {...}, "sampler": {...}, "run": {...}}``, fully
        resolved: every key of the chosen theory form and sampler present, with the types of
        the schema.

    Raises
    ------
    ConfigError
        For a missing or unreadable file, a TOML syntax error, a malformed ``--set``, an unknown
        table or key, a wrong type, an out-of-range value, a bad lattice shape, an unknown or
        unimplemented name, or a key that does not belong to the chosen theory or sampler.
    """
    layer_set = _overrides_layer(list(overrides))  # syntax errors first: cheap and clear
    layers: list[tuple[Mapping[str, Any], str]] = [
        (_schema_defaults(), "the schema defaults"),
        (_parse_toml(default_config_text(), _DEFAULT_SOURCE), _DEFAULT_SOURCE),
    ]
    if path is not None:
        layers.append((_read_file(path), str(path)))
    layers.append((layer_set, _SET_SOURCE))
    merged, sources = merge_layers(layers)
    _apply_theory_defaults(merged, sources)
    return validate_config(merged, sources)


_DEFAULT_SOURCES = ("the schema defaults", _DEFAULT_SOURCE)


def _apply_theory_defaults(merged: dict, sources: dict) -> None:
    """Replace the defaults by the theory's own (:data:`~.schema.THEORY_DEFAULTS`; plain keys are
    sampler keys, dotted ones name their table) where no user layer (file or ``--set``) set the
    key."""
    theory = merged.get("theory", {})
    sampler = merged.get("sampler")
    name = theory.get("name") if isinstance(theory, dict) else None
    if not isinstance(sampler, dict) or name not in THEORY_DEFAULTS:
        return
    for key, value in THEORY_DEFAULTS[name].items():
        section, _, key = key.rpartition(".")
        section = section or "sampler"
        dotted = f"{section}.{key}"
        table = merged.get(section)
        if isinstance(table, dict) and sources.get(dotted, _DEFAULT_SOURCE) in _DEFAULT_SOURCES:
            table[key] = value
            sources[dotted] = f"the defaults of theory {name!r}"
