"""Load every page of the built book in headless Chromium, offline (chapter 0).

``python -m tfbook_tools.build browser-test _build/html`` (``make browser-test``) serves the
built HTML on 127.0.0.1, opens every page in Debian's Chromium driven by Playwright with every
request to another host aborted, and fails when

- a page with math has formulas that MathJax did not typeset,
- a web font fails to load (e.g. the bundled Hangul font, without which Korean shows as boxes),
- an image fails to load,
- a figure's image (a plot or schematic with a caption) has no alt text at all (docutils
  writes the file name when a cell gives none: those are counted, not failed),
- a widget area is empty (a widget view whose manager could not render it),
- the page raises a JavaScript error,
- a chapter page has no working link to its student edition,
- the search page finds nothing for "attention".

It prints what it counted per page and writes one screenshot per page to
``_build/screenshots/``: the whole page by default, only its first screen with
``--screenshots top`` (what ``make test`` uses: a full-page shot of a long chapter costs
seconds). The pages are shared among ``--workers`` browsers (default 2, one per core of the
book's machine), each with its own Chromium.
"""

from __future__ import annotations

import concurrent.futures
import functools
import http.server
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PageReport", "find_chromium", "check_pages", "check_in_parallel", "run"]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

_COUNT_JS = """
() => {
  const maths = Array.from(
      document.querySelectorAll('div.math.notranslate, span.math.notranslate'));
  const typeset = maths.filter(el => el.querySelector(
      '.MathJax, .MathJax_Display, .MathJax_SVG, .MathJax_SVG_Display, .MathJax_CHTML'));
  const raw = maths.filter(el => !typeset.includes(el)).map(el => el.textContent.slice(0, 60));
  const imgs = Array.from(document.querySelectorAll('article img, main img'));
  const broken = imgs.filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src);
  const figureImgs = Array.from(document.querySelectorAll('article figure img, main figure img'));
  const noAlt = figureImgs.filter(img => !(img.getAttribute('alt') || '').trim())
      .map(img => img.src);
  const fileNameAlt = figureImgs.filter(
      img => /[.](png|jpe?g|svg|gif)$/i.test((img.getAttribute('alt') || '').trim())).length;
  const views = Array.from(document.querySelectorAll(
      'script[type="application/vnd.jupyter.widget-view+json"]'));
  const emptyWidgets = views.filter(s => {
      const box = s.parentElement;
      return !box || box.querySelectorAll('.jupyter-widgets, .widget-box, .lm-Widget').length === 0;
  }).length;
  // MathJax_Blank is MathJax's own font-detection probe, expected to fail.
  const badFonts = Array.from(document.fonts)
      .filter(f => f.status === 'error' && !f.family.startsWith('MathJax'))
      .map(f => f.family);
  return {badFonts: Array.from(new Set(badFonts)), maths: maths.length,
          typeset: typeset.length, raw: raw.slice(0, 3),
          images: imgs.length, broken: broken, widgets: views.length, emptyWidgets: emptyWidgets,
          figures: figureImgs.length, noAlt: noAlt, fileNameAlt: fileNameAlt};
}
"""


@dataclass
class PageReport:
    """What the browser saw on one page."""

    page: str
    maths: int = 0
    typeset: int = 0
    images: int = 0
    figures: int = 0
    described: int = 0
    widgets: int = 0
    problems: list[str] = field(default_factory=list)


def find_chromium() -> str | None:
    """Path of a Chromium binary (``$TFBOOK_CHROMIUM``, then the usual names), or ``None``."""
    env = os.environ.get("TFBOOK_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


def _serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _pages(html_dir: Path) -> list[str]:
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    pages = []
    for path in sorted(html_dir.rglob("*.html")):
        rel = path.relative_to(html_dir).as_posix()
        if rel.startswith(("_static/", "_sources/", "_modules/", ".")) or path.name in skip:
            continue
        if rel == "index.html":  # a redirect to book/index.html
            continue
        pages.append(rel)
    return pages


def _check_student_link(page) -> list[str]:
    """A chapter page links its student edition, and the link serves a notebook."""
    href = page.evaluate(
        "() => { const a = document.querySelector('.tfbook-student-download a');"
        " return a ? a.href : null; }"
    )
    if not href:
        return ["no link to the student edition"]
    response = page.request.get(href)
    if response.status != 200:
        return [f"student edition link {href} answered {response.status}"]
    try:
        notebook = response.json()
    except Exception:  # noqa: BLE001 - any decoding problem is a broken download
        return [f"student edition link {href} is not a notebook"]
    if "BEGIN SOLUTION" in response.text() or "cells" not in notebook:
        return [f"student edition {href} is not a clean student edition"]
    return []


def check_pages(
    html_dir: Path,
    screenshots: Path,
    chromium: str,
    pages: list[str] | None = None,
    search: bool = True,
    full_page: bool = True,
) -> list[PageReport]:
    """Check ``pages`` (default: every page) and, with ``search``, the search page; return
    one report per page. ``full_page=False`` screenshots only the first screen."""
    from playwright.sync_api import sync_playwright

    screenshots.mkdir(parents=True, exist_ok=True)
    pages = _pages(html_dir) if pages is None else pages
    server, base = _serve(html_dir)
    reports: list[PageReport] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1280, "height": 900})

            def offline(route):
                if route.request.url.startswith(base):
                    route.continue_()
                else:
                    route.abort()

            context.route("**/*", offline)
            for rel in pages:
                report = PageReport(rel)
                errors: list[str] = []
                page = context.new_page()
                page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
                page.goto(f"{base}/{rel}", wait_until="load")
                has_math = page.evaluate("() => !!document.querySelector('.math.notranslate')")
                if has_math:
                    try:
                        page.wait_for_function(
                            "() => window.MathJax && MathJax.Hub && MathJax.Hub.queue"
                            " && MathJax.Hub.queue.pending === 0 && MathJax.Hub.queue.running"
                            " === 0 && document.querySelector('.MathJax, .MathJax_SVG')",
                            timeout=30_000,
                        )
                    except Exception:  # noqa: BLE001 - reported as untypeset math below
                        pass
                counts = page.evaluate(_COUNT_JS)
                report.maths, report.typeset = counts["maths"], counts["typeset"]
                report.images, report.widgets = counts["images"], counts["widgets"]
                report.figures = counts["figures"]
                report.described = counts["figures"] - counts["fileNameAlt"] - len(counts["noAlt"])
                if counts["maths"] > counts["typeset"]:
                    report.problems.append(
                        f"{counts['maths'] - counts['typeset']} formula(s) not typeset, "
                        f"e.g. {counts['raw']}"
                    )
                if counts["broken"]:
                    report.problems.append(f"images failed to load: {counts['broken'][:3]}")
                if counts["noAlt"]:
                    report.problems.append(f"figure images without alt text: {counts['noAlt'][:3]}")
                if counts["badFonts"]:
                    report.problems.append(f"web fonts failed to load: {counts['badFonts']}")
                if counts["emptyWidgets"]:
                    report.problems.append(f"{counts['emptyWidgets']} empty widget area(s)")
                report.problems += [f"JavaScript error: {e}" for e in errors]
                if re.match(r"book/\d\d_", rel):
                    report.problems += _check_student_link(page)
                shot = screenshots / (rel.replace("/", "_").removesuffix(".html") + ".png")
                page.screenshot(path=str(shot), full_page=full_page)
                page.close()
                reports.append(report)

            if not search:
                browser.close()
                return reports
            search_report = PageReport("search.html?q=attention")
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/search.html?q=attention", wait_until="load")
            try:
                page.wait_for_selector("#search-results li", timeout=30_000)
                hits = page.locator("#search-results li").count()
            except Exception:  # noqa: BLE001 - reported below
                hits = 0
            if hits == 0:
                search_report.problems.append("the search page found nothing for 'attention'")
            search_report.problems += [f"JavaScript error: {e}" for e in errors]
            search_report.images = hits  # reported as "hits"
            page.screenshot(path=str(screenshots / "search.png"), full_page=False)
            reports.append(search_report)
            browser.close()
    finally:
        server.shutdown()
    return reports


def check_in_parallel(
    html_dir: Path, screenshots: Path, chromium: str, workers: int = 2, full_page: bool = True
) -> list[PageReport]:
    """:func:`check_pages` with the pages dealt out to ``workers`` processes, each running
    its own Chromium (Playwright's synchronous API is not thread-safe). The largest pages
    are dealt first, in turn, so the workers finish together; reports come back in page
    order, the search page last."""
    pages = _pages(html_dir)
    workers = max(1, min(workers, len(pages)))
    if workers == 1:
        return check_pages(html_dir, screenshots, chromium, full_page=full_page)
    by_size = sorted(pages, key=lambda rel: -(html_dir / rel).stat().st_size)
    shares = [by_size[i::workers] for i in range(workers)]
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        futures = [
            pool.submit(check_pages, html_dir, screenshots, chromium, share, i == 0, full_page)
            for i, share in enumerate(shares)
        ]
        found = [report for f in futures for report in f.result()]
    order = {rel: i for i, rel in enumerate(pages)}
    return sorted(found, key=lambda r: order.get(r.page, len(order)))


def run(
    html_dir: Path, screenshots: Path | None = None, workers: int = 2, full_page: bool = True
) -> int:
    """Command-line entry: print a table of what was checked; 0 when every page is fine."""
    html_dir = Path(html_dir)
    if not (html_dir / "book" / "index.html").is_file():
        print(f"browser-test: no built book in {html_dir} (run `make book` first)")
        return 2
    chromium = find_chromium()
    if chromium is None:
        print("browser-test: Chromium not found (apt-get install chromium, or set TFBOOK_CHROMIUM)")
        return 2
    screenshots = screenshots or html_dir.parent / "screenshots"
    reports = check_in_parallel(html_dir, screenshots, chromium, workers, full_page)
    failed = 0
    print(f"{'page':45} {'formulas':>9} {'typeset':>8} {'images':>7} {'widgets':>8}  result")
    for r in reports:
        status = "ok" if not r.problems else "FAIL"
        failed += bool(r.problems)
        if r.page.startswith("search"):
            print(f"{r.page:45} {'':>9} {'':>8} {r.images:>7} {'':>8}  {status} ({r.images} hits)")
        else:
            print(f"{r.page:45} {r.maths:>9} {r.typeset:>8} {r.images:>7} {r.widgets:>8}  {status}")
        for problem in r.problems:
            print(f"    - {problem}")
    total_math = sum(r.maths for r in reports)
    total_img = sum(r.images for r in reports if not r.page.startswith("search"))
    total_fig = sum(r.figures for r in reports)
    described = sum(r.described for r in reports)
    print(
        f"browser-test: {len(reports) - 1} pages + search, {total_math} formulas, "
        f"{total_img} images ({total_fig} in captioned figures, {described} of them with written "
        f"alt text); "
        f"screenshots in {screenshots}"
    )
    if failed:
        print(f"browser-test: {failed} page(s) FAILED")
        return 1
    return 0
