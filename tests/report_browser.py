"""A report as a reader at a 1400 x 900 window sees it, in a real headless Chromium: is the
answer on the first screen, does every table fit the window, is every plot label whole?
Shared by the report tests and the README main-job test."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = {"width": 1400, "height": 900}
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# In the page: every way the first screen, a table or a label fails the reader.
LAYOUT_PROBLEMS = """() => {
  const out = [];
  const width = document.documentElement.clientWidth, height = window.innerHeight;
  const answer = document.querySelector('#answer');
  if (!answer) {
    out.push('the page has no answer');
  } else {
    const box = answer.getBoundingClientRect();
    if (box.top < 0 || box.bottom > height || box.height === 0)
      out.push(`the answer spans ${box.top}-${box.bottom} px; the first screen ends at ${height}`);
  }
  for (const t of document.querySelectorAll('table')) {
    const frame = t.parentElement;
    if (t.scrollWidth > width || frame.scrollWidth > frame.clientWidth)
      out.push(`table #${t.id} is ${t.scrollWidth} px wide in a ${width} px window`);
  }
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    const svg = plot.querySelector('.main-svg').getBoundingClientRect();
    const area = plot.querySelector('.nsewdrag');
    for (const text of plot.querySelectorAll('.textpoint text')) {
      const r = text.getBoundingClientRect();
      // A trace clipped to its axes hides what leaves them; the others, what leaves the svg.
      const b = text.closest('[clip-path]') && area ? area.getBoundingClientRect() : svg;
      const out_x = r.left < b.left - 1 || r.right > b.right + 1;
      if (out_x || r.top < b.top - 1 || r.bottom > b.bottom + 1)
        out.push(`label "${text.textContent}" of #${plot.id} is cut off`);
    }
  }
  return out;
}"""


@contextmanager
def chromium():
    """Debian's Chromium, headless, through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_report(browser, index: Path, errors: list | None = None, fetched: list | None = None):
    """The report at `index` in a 1400 x 900 window, every plot drawn, scrolled to the top.
    Console errors go to `errors`; any request for something outside the page is refused
    and goes to `fetched` (the page must open offline)."""
    errors, fetched = (
        (errors if errors is not None else []),
        (fetched if fetched is not None else []),
    )
    page = browser.new_page(viewport=WINDOW)
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.route(
        "**/*",
        lambda route: (
            route.continue_()
            if route.request.url.startswith("file:")
            else (fetched.append(route.request.url), route.abort())
        ),
    )
    page.goto(index.resolve().as_uri(), wait_until="load")
    expected = page.locator(".plotly-graph-div").count()
    page.wait_for_function(
        f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {expected}"
    )
    return page


def layout_problems(page) -> list[str]:
    """What the reader of an open report is denied: an answer not wholly on the first
    screen, a table wider than the window, a plot label cut off. Empty when none."""
    return page.evaluate(LAYOUT_PROBLEMS)


def report_layout_problems(index: Path, screenshot: Path | None = None) -> list[str]:
    """layout_problems() of the report at `index`, in a Chromium of its own; the first
    screen saved to `screenshot` when given."""
    with chromium() as browser:
        page = open_report(browser, index)
        if screenshot is not None:
            page.screenshot(path=str(screenshot))
        return layout_problems(page)
