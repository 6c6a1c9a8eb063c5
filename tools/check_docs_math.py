"""Check that the built docs render their math offline, in a real browser.

Loads every HTML page of a built site in headless Chromium with the network cut off (all
host names resolve to nothing; ``file://`` still loads), lets the page's scripts run, and
reads the resulting DOM. A page fails when it contains math (Sphinx marks it with the
``math`` class) but MathJax produced no rendered output (``mjx-container``), or when raw
TeX delimiters (``\\(``, ``\\[``) are still in the page's text.

Usage: ``python tools/check_docs_math.py docs/_build/html`` (exit status 1 on failure).
The nox ``docs`` session runs it after building; a test runs it when Sphinx and Chromium
are installed.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

_SCRIPT = re.compile(r"<(script|style)\b.*?</\1>", re.S | re.I)
_TAGS = re.compile(r"<[^>]+>")


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def rendered_dom(browser, page, timeout=60):
    """The DOM of ``page`` after its scripts ran, with the network off."""
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking",
           "--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
           page.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return out.stdout


def check_page(browser, page):
    """A list of problems with ``page`` (empty when it is fine)."""
    src = page.read_text(encoding="utf-8", errors="replace")
    has_math = 'class="math' in src
    if not has_math:
        return []
    dom = rendered_dom(browser, page)
    problems = []
    if "mjx-container" not in dom:
        problems.append("math is not rendered (no MathJax output)")
    text = html.unescape(_TAGS.sub(" ", _SCRIPT.sub(" ", dom)))
    for delim in ("\\(", "\\["):
        if delim in text:
            i = text.index(delim)
            problems.append(f"raw TeX {delim!r} shown: ...{text[max(0, i - 30):i + 50]!r}")
    if "cdn.jsdelivr" in src or "cdnjs" in src:
        problems.append("the page loads MathJax from a CDN")
    return problems


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    site = Path(argv[0] if argv else "docs/_build/html")
    browser = chromium()
    if browser is None:
        print("check_docs_math: no Chromium found (apt install chromium)", file=sys.stderr)
        return 2
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)
    bad, checked = 0, 0
    for page in pages:
        problems = check_page(browser, page)
        if 'class="math' in page.read_text(encoding="utf-8", errors="replace"):
            checked += 1
        for p in problems:
            bad += 1
            print(f"{page.relative_to(site)}: {p}")
    print(f"check_docs_math: {checked} pages with math rendered offline in Chromium, "
          f"{bad} problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
