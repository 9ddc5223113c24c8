"""docs/cli-reference.md is what the schema generates (it cannot go stale), and it names every
key of the schema."""

from pathlib import Path

import pytest

from lattice_ml.cli.reference import reference_markdown
from lattice_ml.cli.schema import iter_schema

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli-reference.md"


def test_the_committed_reference_is_the_generated_one():
    if not PAGE.exists():
        pytest.skip("docs/ not in this checkout (installed package only)")
    assert PAGE.read_text() == reference_markdown(), (
        "docs/cli-reference.md is stale: python -m lattice_ml.cli.reference > "
        "docs/cli-reference.md")


def test_every_key_has_a_row():
    text = reference_markdown()
    for section, _chain, key, p in iter_schema():
        assert f"| `{section}.{key}` |" in text
        assert p.doc.replace("|", "\\|")[:40] in text
