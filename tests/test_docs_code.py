"""Every ```python block of docs/*.md runs as written: each on its own, as a user copies one, in a
fresh process and an empty folder (the README's blocks run in order, beside the files they name, in
``tests/test_readme.py``). A block that needs more data or time than a
test has says so on a comment line of its own, ``# not run: WHY``, and is skipped with that reason
(``pytest -rs`` lists them)."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^([ \t]*)```(?:python|py)[ \t]*\n(.*?)^\1```[ \t]*$", re.MULTILINE | re.DOTALL)
NOT_RUN = re.compile(r"^[ \t]*#[ \t]*not run\b[ \t:]*(.*)$", re.MULTILINE | re.IGNORECASE)


def code_blocks(text: str) -> list[tuple[int, str]]:
    """``(line of the opening fence, code)`` for each fenced Python block, indented ones dedented."""
    return [(text.count("\n", 0, m.start()) + 1, textwrap.dedent(m.group(2))) for m in FENCE.finditer(text)]


def _params():
    for page in sorted((ROOT / "docs").glob("*.md")):
        for line, code in code_blocks(page.read_text(encoding="utf-8")):
            yield pytest.param(code, id=f"{page.relative_to(ROOT)}:{line}")


def test_blocks_are_found_and_marks_read():
    page = textwrap.dedent("""\
        text
        ```python
        x = 1
        ```
        - a list item:
          ```py
          # not run: needs the paper's zoo
          y = 2
          ```
        ```sh
        weightspace zoo info runs/zoo
        ```
        """)
    blocks = code_blocks(page)
    assert blocks == [(2, "x = 1\n"), (6, "# not run: needs the paper's zoo\ny = 2\n")]
    assert NOT_RUN.search(blocks[0][1]) is None
    assert NOT_RUN.search(blocks[1][1]).group(1) == "needs the paper's zoo"


@pytest.mark.parametrize("code", list(_params()))
def test_code_block_runs_as_written(code, tmp_path):
    skip = NOT_RUN.search(code)
    if skip:
        pytest.skip(f"marked not run: {skip.group(1) or 'no reason given'}")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, f"the block fails as written:\n{code}\n{proc.stderr[-3000:]}"
