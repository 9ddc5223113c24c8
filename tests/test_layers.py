"""Data flows one way (docs/design.md): a module imports only from its own layer or lower ones."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# lowest first; a package or module of lattice_ml and its layer: one unit per layer, so that an
# import cycle between two units fails (the order of docs/design.md, checked below)
LAYERS = [
    {"backend"},
    {"parallel"},
    {"lattice"},
    {"dispatch"},
    {"optim"},
    {"stats"},
    {"groups"},
    {"scalar"},
    {"gauge"},
    {"smearing"},
    {"kernels"},
    {"fermions"},
    {"flows"},
    {"samplers"},
    {"io"},
    {"cli"},
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _unit(parts):
    """Top-level unit of lattice_ml that a dotted path (below lattice_ml) belongs to."""
    return parts[0] if parts else None


def _imports(path: Path, pkg_parts: list[str]):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "lattice_ml" and len(parts) > 1:
                    yield node.lineno, parts[1]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "lattice_ml":
                    continue
                below = parts[1:]
            else:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                below = base + (node.module.split(".") if node.module else [])
            if below:
                yield node.lineno, below[0]
            else:  # from lattice_ml import x
                for alias in node.names:
                    yield node.lineno, alias.name


def _modules():
    for path in (ROOT / "lattice_ml").rglob("*.py"):
        rel = path.relative_to(ROOT / "lattice_ml").with_suffix("").parts
        pkg = list(rel[:-1]) if rel[-1] != "__init__" else list(rel[:-1])
        if rel[-1] == "__init__" and not rel[:-1]:
            continue  # the top-level __init__ may re-export anything
        yield path, pkg, rel
    for path in (ROOT / "kernels").rglob("*.py"):
        rel = ("kernels",) + path.relative_to(ROOT / "kernels").with_suffix("").parts
        yield path, list(rel[:-1]), rel


def test_no_module_imports_a_higher_layer():
    bad = []
    for path, pkg, rel in _modules():
        own = RANK.get(rel[0])
        assert own is not None, f"{path}: lattice_ml.{rel[0]} has no layer in tests/test_layers.py"
        for line, unit in _imports(path, pkg):
            if unit in RANK and RANK[unit] > own:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({rel[0]}) imports {unit}")
    assert not bad, "imports against the data flow:\n" + "\n".join(bad)


def test_design_doc_states_this_order():
    """The diagram of docs/design.md ("## Layers") lists the units of LAYERS in the same order."""
    text = (ROOT / "docs" / "design.md").read_text()
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    units = [u.strip() for u in block.replace("\n", " ").split("→")]
    assert [{u} for u in units] == LAYERS, units


def test_a_cycle_between_two_units_would_fail(tmp_path):
    """The check sees an import of a higher unit from a lower one (here gauge -> fermions)."""
    mod = tmp_path / "m.py"
    mod.write_text("from ..fermions import wilson\nfrom lattice_ml.smearing import stout\n")
    units = [unit for _, unit in _imports(mod, ["gauge"])]
    assert units == ["fermions", "smearing"]
    assert all(RANK[u] > RANK["gauge"] for u in units)
