"""Open a page in headless Chromium and report what a reader would see: images decoded, tables."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# Injected into a copy of the page (never into the product). The load event fires once every image
# has loaded or failed; a decoded image has a natural width. The findings go into the DOM, which
# --dump-dom then prints.
_PROBE = """
<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const decoded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const rows = document.querySelectorAll('#summary tbody tr').length;
  // Elements reaching past the window's right edge, except inside a scroll box (.scroll, pre).
  const width = document.documentElement.clientWidth;
  const overflowing = [...document.body.querySelectorAll('*')]
    .filter(e => !e.closest('.scroll, pre') && e.getBoundingClientRect().right > width + 1)
    .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : ''));
  const pageOverflow = document.documentElement.scrollWidth - width;
  const headings = [...document.querySelectorAll('h2')].map(h => h.textContent);
  // Tables wider than their scroll box: the reader scrolls sideways to read them.
  const scrolled = [...document.querySelectorAll('.scroll table')]
    .filter(t => t.parentElement.scrollWidth > t.parentElement.clientWidth + 1).map(t => t.id);
  const pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify({images: imgs.length, decoded: decoded, summary_rows: rows,
                                    title: document.title, width: width, overflowing: overflowing,
                                    page_overflow: pageOverflow, headings: headings, scrolled: scrolled});
  document.body.appendChild(pre);
});
</script>
"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium not installed (Debian package 'chromium'; `make test` installs it as root)")
    return exe


def inspect_page(html_path: Path, width: int = 1280) -> dict:
    """What Chromium shows of the page in a window ``width`` px wide: image counts, summary rows,
    ``overflowing`` (elements past the right edge outside a scroll box), ``page_overflow`` (px the
    page scrolls sideways), the ``headings`` (h2) and the tables that ``scrolled`` sideways in their box."""
    page = Path(html_path).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "page.html"
        probe.write_text(page.replace("</body>", _PROBE + "</body>"))
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp}/profile", f"--window-size={int(width)},1000", "--hide-scrollbars",
               "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', out, re.S)
    assert found, f"the page did not finish loading in Chromium; output began: {out[:300]!r}"
    return json.loads(html.unescape(found.group(1)))
