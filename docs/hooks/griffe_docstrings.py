"""Griffe extension for the API pages: the docstrings are shown as Markdown
(``docstring_style: null``: no numpy parser that drops the free text some docstrings put after
their sections), with two display-only rewrites made when griffe loads them (the source is not
touched):

* Sphinx cross-reference roles, ``:func:`name``` / ``:class:`~pkg.mod.Name``` / ``:mod:`` ...,
  become code spans (`name`, `Name`); Markdown would print the role literally.
* The numpy item sections (``Parameters``, ``Returns``, ``Yields``, ``Attributes``, ``Raises``,
  ``Warns``, ``Other Parameters``, each a title underlined with dashes) become a bold title and a
  bullet list with one item per ``name : type`` (or bare ``type``) line and its indented
  description; Markdown would run the lines together into one paragraph and make each title a
  heading of the page's table of contents. A line at the left margin that is not an item ends the
  section and is kept as it is. Other underlined titles (the topic headings of module docstrings)
  stay headings.

Loaded by mkdocs.yml (``extensions:`` of the python handler); :func:`rewrite` is tested in
tests/test_tutorials.py.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const|ref):`~?([^`]+)`")
SECTIONS = ("Parameters", "Other Parameters", "Returns", "Yields", "Attributes", "Raises",
            "Warns")
ITEM = re.compile(r"^(\S.*?) : (.*)$")
BARE = re.compile(r"^[^\s:]+$")
UNDERLINE = re.compile(r"^-{3,}\s*$")


def _role(m: re.Match) -> str:
    target = m.group(1)
    if m.group(0).split("`", 1)[1].startswith("~"):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _item(line: str) -> str:
    m = ITEM.match(line)
    if m:
        name, rest = m.group(1), m.group(2)
        names = ", ".join(f"`{n.strip()}`" for n in name.split(","))
        return f"* {names} : {rest}  "                # two spaces: the description on a new line
    return f"* `{line.strip()}`  "


def rewrite(text: str) -> str:
    """The display form of one docstring (see the module docstring)."""
    text = ROLE.sub(_role, text)
    lines = text.split("\n")
    out: list[str] = []
    i, in_section = 0, False
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() in SECTIONS and UNDERLINE.match(nxt.strip()) and not line.startswith(" "):
            if out and out[-1].strip():
                out.append("")
            out.extend([f"**{line.strip()}**", ""])
            in_section = True
            i += 2
            continue
        if in_section:
            if not line.strip() or line.startswith((" ", "\t")):
                out.append(line)                       # blank, or an item's description
            elif (ITEM.match(line) or BARE.match(line)) and not UNDERLINE.match(nxt.strip()):
                out.append(_item(line))
            else:                                      # free text at the margin: section ends
                in_section = False
                if out and out[-1].strip():
                    out.append("")
                out.append(line)
        else:
            out.append(line)
        i += 1
    return "\n".join(out)


class Docstrings(griffe.Extension):
    """Apply :func:`rewrite` to every docstring griffe loads."""

    def on_object(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
