"""The reference of every configuration key, generated from the schema
(:data:`lattice_ml.cli.schema.SCHEMA`), so that it cannot go stale.

::

    python -m lattice_ml.cli.reference > docs/cli-reference.md

writes the page; ``tests/test_cli_reference.py`` fails when the committed page differs from
what the schema gives. One table per configuration table, one row per key in schema order,
with the variant it belongs to (the selector words that must be chosen for the key to exist),
its type, default, allowed values or range, and its one-line documentation (the same line
``lattice-ml config`` prints).
"""

from __future__ import annotations

from .schema import REQUIRED, SCHEMA, THEORY_DEFAULTS, iter_schema

__all__ = ["reference_markdown"]

_KINDS = {"int": "integer", "float": "number", "str": "string", "bool": "true/false",
          "shape": "list of 2–4 even integers ≥ 2", "ints": "list of positive integers"}


def _toml(value) -> str:
    if value is REQUIRED:
        return "(required)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, (list, tuple)):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    return f"`{value!r}`"


def _allowed(p) -> str:
    if p.choices:
        return ", ".join(f"`{c}`" for c in p.choices)
    lo = hi = ""
    if p.minimum is not None:
        lo = f"{'>' if p.exclusive_minimum else '≥'} {p.minimum:g}"
    if p.maximum is not None:
        hi = f"≤ {p.maximum:g}"
    return " and ".join(x for x in (lo, hi) if x)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def reference_markdown() -> str:
    """The Markdown page of every key (see the module docstring)."""
    lines = ["# Configuration reference (generated)", "",
             "Generated from the schema by `python -m lattice_ml.cli.reference` — do not edit; "
             "[cli](cli.md) explains the tables, the rules between keys and the outputs. A key "
             "with a *variant* exists only when the selector keys named there have those "
             "values (e.g. `theory.beta` of φ⁴ in the hopping form).", ""]
    rows: dict[str, list[str]] = {section: [] for section in SCHEMA}
    for section, chain, key, p in iter_schema():
        variant = ", ".join(f"`{section}.{sel} = \"{word}\"`" for sel, word in chain) or "all"
        rows[section].append(
            f"| `{section}.{key}` | {variant} | {_KINDS.get(p.kind, p.kind)} | "
            f"{_toml(p.default)} | {_cell(_allowed(p))} | {_cell(p.doc)} |")
    for section, table_rows in rows.items():
        lines += [f"## `[{section}]`", ""]
        doc = getattr(SCHEMA[section], "doc", "")
        if doc:
            lines += [_cell(doc), ""]
        lines += ["| key | variant | type | default | allowed | meaning |",
                  "| --- | --- | --- | --- | --- | --- |", *table_rows, ""]
    lines += ["## Defaults that depend on the theory", "",
              "These replace the defaults above for the theory named (a key set in the file or "
              "by `--set` keeps its value); plain keys are `[sampler]` keys.", "",
              "| `theory.name` | defaults |", "| --- | --- |"]
    for name, values in THEORY_DEFAULTS.items():
        text = ", ".join(f"`{k if '.' in k else 'sampler.' + k} = {v}`" for k, v in values.items())
        lines.append(f"| `{name}` | {text or '(the defaults above)'} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - exercised through tests/test_cli_reference.py
    print(reference_markdown(), end="")
