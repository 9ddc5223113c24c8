"""MkDocs hook: the tutorials (``docs/tutorials/*.md``, jupytext Markdown notebooks: Markdown
with ``python`` code cells) are executed on every build of the site, and what each cell prints
and every PNG it writes are put under the cell, so the page shows the numbers the reader's own
run prints (pictures inlined as data URIs).

Cells run in order in one namespace, in a temporary working directory; a cell that raises
stops the build (CI builds the site, so a tutorial that no longer runs fails CI). Open a
tutorial as a notebook with ``jupytext --to notebook docs/tutorials/<name>.md``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import tempfile
from pathlib import Path

CELL = re.compile(r"^```python\n(.*?)^```\n", re.S | re.M)


def on_page_markdown(markdown, page, config, files):
    src = page.file.src_uri
    if not src.startswith("tutorials/") or src.endswith("index.md"):
        return markdown
    stem = Path(src).stem
    namespace: dict = {"__name__": f"tutorial_{stem}"}
    pieces, last = [], 0
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            for m in CELL.finditer(markdown):
                pieces.append(markdown[last:m.end()])
                last = m.end()
                before = set(Path(tmp).glob("*.png"))
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    exec(compile(m.group(1), f"{src} (cell at offset {m.start()})", "exec"),
                         namespace)
                text = buf.getvalue().rstrip()
                if text:
                    pieces.append(f"\n```text\n{text}\n```\n")
                for png in sorted(set(Path(tmp).glob("*.png")) - before):
                    # inline (a data URI): the picture travels with the page, no file to link
                    data = base64.b64encode(png.read_bytes()).decode("ascii")
                    pieces.append(f"\n![{png.stem}](data:image/png;base64,{data})\n")
        finally:
            os.chdir(here)
    pieces.append(markdown[last:])
    return "".join(pieces)
