"""The course site: built with the README's command, then every page opened in headless Chromium.

A page fails on what a reader would trip over: a broken image, a broken internal link (missing
file or `#fragment`), a traceback or `SomethingError:` in a notebook output, a JavaScript error,
math that MathJax did not render, anything loaded from off the site (it must work offline), or a
link to the package source on GitHub that was not turned into the site's own source page.
Screenshots of the chapters land in docs/_build/screenshots/. Without Debian's chromium and
chromedriver the browser tests skip, unless DDLEARN_REQUIRE_BROWSER=1 (CI) makes them fail.
"""

import functools
import os
import re
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
SCREENSHOTS = ROOT / "docs" / "_build" / "screenshots"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REPO = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
SPHINX_WARNING = re.compile(r"(^|: )(WARNING|ERROR|CRITICAL): ")  # not "[IPKernelApp] WARNING |"
ERROR_IN_OUTPUT = re.compile(r"Traceback \(most recent call last\)|\b[A-Z]\w*(Error|Exception):")

# Runs in the page: load every image (lazy ones too), wait for MathJax, then report what it sees.
INSPECT_PAGE = """
const done = arguments[arguments.length - 1];
const settle = (promise) => Promise.race([promise, new Promise(r => setTimeout(r, 30000))]);
(async () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; });
  await settle(Promise.all(images.map(img => img.complete ? null : new Promise(r => {
    img.addEventListener("load", r); img.addEventListener("error", r); }))));
  const math = [...document.querySelectorAll(".math")];
  if (math.length) {
    await settle(new Promise(r => { const poll = () => window.MathJax && MathJax.startup &&
      MathJax.startup.promise ? MathJax.startup.promise.then(r) : setTimeout(poll, 50); poll(); }));
  }
  const outputs = [...document.querySelectorAll(".cell_output .output")];
  done({
    brokenImages: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    outputs: outputs.map(o => ({classes: o.className, text: o.innerText})),
    math: math.length, unrenderedMath: math.filter(m => !m.querySelector("mjx-container"))
      .map(m => m.textContent.slice(0, 60)),
    loads: performance.getEntriesByType("resource").map(e => e.name),
    status: performance.getEntriesByType("navigation")[0].responseStatus,
  });
})();
"""


def build_site() -> subprocess.CompletedProcess:
    """The README's command, into a fresh folder, in quick mode unless DDLEARN_QUICK says else."""
    shutil.rmtree(SITE, ignore_errors=True)
    env = {**os.environ, "DDLEARN_QUICK": os.environ.get("DDLEARN_QUICK", "1")}
    return subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "docs", str(SITE)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)


@pytest.fixture(scope="module")
def site() -> subprocess.CompletedProcess:
    result = build_site()
    output = (result.stdout + result.stderr)[-5000:]
    assert result.returncode == 0, f"the site build failed:\n{output}"
    return result


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        message = f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver"
        if os.environ.get("DDLEARN_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1280,1800",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(120)
    yield driver
    driver.quit()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def serve(folder: Path):
    """http://127.0.0.1:<free port>/ serving `folder` from a thread (not file://)."""
    handler = functools.partial(QuietHandler, directory=folder)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@functools.cache
def ids_in(page: Path) -> frozenset:
    return frozenset(re.findall(r'\sid="([^"]+)"', page.read_text(encoding="utf-8")))


def link_problem(href: str, base: str, folder: Path) -> str | None:
    """Why an internal link is broken (its file or its #fragment is missing), or None."""
    if href.startswith(f"{REPO}/blob/main/ddlearn/"):
        return f"links to GitHub instead of the site's source page: {href}"
    if not href.startswith(base):
        return None
    parts = urlsplit(href)
    target = folder / unquote(parts.path).lstrip("/")
    target = target / "index.html" if target.is_dir() else target
    if not target.is_file():
        return f"broken link {href}: no {target.relative_to(folder)}"
    fragment = unquote(parts.fragment)
    if fragment and target.suffix == ".html" and fragment not in ids_in(target):
        return f"broken link {href}: no id {parts.fragment!r} on the target page"
    return None


def page_problems(driver, base: str, folder: Path, page: str, chapter: bool) -> list[str]:
    """Open one page and list everything wrong with it, each item prefixed with the page."""
    driver.get(base + page)  # on a busy machine, get() may return while the old page is shown
    WebDriverWait(driver, 120).until(lambda driver: driver.execute_script(
        "return document.readyState === 'complete' && location.href") == base + page)
    seen = driver.execute_async_script(INSPECT_PAGE)
    problems = [] if seen["status"] == 200 else [f"HTTP status {seen['status']}"]
    problems += [f"broken image {src}" for src in seen["brokenImages"]]
    problems += filter(None, (link_problem(href, base, folder) for href in set(seen["links"])))
    problems += [f"error in a notebook output ({o['classes']}): {o['text'][:300]}"
                 for o in seen["outputs"] if ERROR_IN_OUTPUT.search(o["text"])]
    problems += [f"JavaScript: {entry['message']}" for entry in driver.get_log("browser")
                 if entry["level"] == "SEVERE"]
    problems += [f"math not rendered by MathJax: {text}" for text in seen["unrenderedMath"]]
    if chapter and not seen["math"]:
        problems.append("a chapter page without any rendered math")
    problems += [f"loaded from off the site: {url}" for url in seen["loads"]
                 if not url.startswith(base)]
    return [f"{page}: {problem}" for problem in problems]


def site_problems(driver, folder: Path, screenshots: Path | None = None) -> list[str]:
    """page_problems of every HTML page under `folder`; chapter pages are also screenshot."""
    pages = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.html")
                   if "_static" not in p.parts)
    problems = []
    with serve(folder) as base:
        for page in pages:
            chapter = page.startswith("chapters/")
            problems += page_problems(driver, base, folder, page, chapter)
            if chapter and screenshots:
                screenshots.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(screenshots / f"{Path(page).stem}.png"))
    return problems


def test_every_page_of_the_site_works_offline(browser, site):
    assert not (problems := site_problems(browser, SITE, SCREENSHOTS)), "\n".join(problems)
    for chapter in (ROOT / "chapters").glob("*.ipynb"):
        assert (SCREENSHOTS / f"{chapter.stem}.png").is_file(), f"no page for {chapter.name}"


def test_site_builds_without_sphinx_warnings(site):
    lines = (site.stdout + site.stderr).splitlines()
    warnings = [line for line in lines if SPHINX_WARNING.search(line)]
    assert not warnings, "\n".join(warnings)


def test_home_page_links_every_chapter(site):
    home = (SITE / "index.html").read_text(encoding="utf-8")
    table = home[home.index("<table"):home.index("</table>")]
    for chapter in sorted((ROOT / "chapters").glob("*.ipynb")):
        link = f'href="chapters/{chapter.stem}.html"'
        assert link in table, f"the table of docs/index.md lacks {chapter.name}"


def test_checker_reports_a_broken_image_link_and_traceback(browser, tmp_path):
    no_favicon = '<link rel="icon" href="data:,">'
    (tmp_path / "other.html").write_text(f'{no_favicon}<p id="here">the target page</p>')
    (tmp_path / "index.html").write_text(
        f'{no_favicon}<img src="missing.png"><a href="nowhere.html">x</a>'
        '<a href="other.html#gone">y</a><a href="other.html#here">fine</a>'
        '<div class="cell_output"><div class="output traceback">'
        "Traceback (most recent call last):\nValueError: broken on purpose</div></div>")
    problems = "\n".join(site_problems(browser, tmp_path))
    for expected in ("broken image", "no nowhere.html", "no id 'gone'", "ValueError: broken"):
        assert expected in problems, f"the checker missed {expected!r}:\n{problems}"
    assert "#here" not in problems and "other.html:" not in problems, problems
