"""Sphinx configuration of the course site: every chapter executed and rendered, and the API.

Build it with (quick mode, as the tests do: prefix `DDLEARN_QUICK=1`)

    sphinx-build -b html docs docs/_build/html

Offline by design: MathJax is served from the build (sphinx-mathjax-offline), no launch buttons,
no widget JavaScript from a CDN, and the chapters' Colab badge image is a local copy.

What this file does besides configuring Sphinx:
- copies `chapters/*.ipynb` into `docs/chapters/` (generated, gitignored), rewriting links to the
  package source on GitHub (`{REPO}/blob/main/ddlearn/<path>.py`) into links to the site's own
  highlighted source page (`../_modules/ddlearn/<path>.html`), the badge image to a local one,
  and folding each exercise's `solution` cell, and leaving out the grader's hidden tests;
- reads docstrings as Markdown (MyST): ddlearn's docstrings use pipe tables, backticks and
  indented code, as a learner reads them in the source;
- gives every module of ddlearn a source page, not only those with documented classes.
"""

import json
import re
import shutil
import sys
import time
from pathlib import Path
from queue import Empty

from docutils import nodes
from docutils.utils import new_document
from jupyter_client.channels import AsyncZMQSocketChannel
from myst_parser.parsers.sphinx_ import MystParser
from sphinx.ext import autosummary
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective

from ddlearn.grade.editions import HIDDEN

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the API reference describes this checkout
REPO = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
REPO = REPO.rstrip("/")

project = "ddlearn"
author = "the ddlearn authors"
copyright = "ddlearn authors, Apache-2.0"

# --------------------------------------------------------------------------------------------------
# The chapters: copied from chapters/, links rewritten, executed by myst-nb
# --------------------------------------------------------------------------------------------------
SOURCE_LINK = re.compile(rf"\[([^\]]+)\]\({re.escape(REPO)}/blob/main/(ddlearn/[\w/]+)\.py\)")
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def source_page(match: re.Match) -> str:
    """A Markdown link to ddlearn/x/y.py on GitHub -> an HTML link to the site's _modules page."""
    module_path = match.group(2).removesuffix("/__init__")
    return f'<a href="../_modules/{module_path}.html">{match.group(1)}</a>'


def site_markdown(text: str) -> str:
    return SOURCE_LINK.sub(source_page, text).replace(COLAB_BADGE, "../_static/colab-badge.svg")


def copy_chapters(source: Path, target: Path) -> None:
    """Write each chapter for the site; untouched copies keep their date (no needless re-read)."""
    target.mkdir(exist_ok=True)
    wanted = {path.name for path in source.glob("*.ipynb")}
    for stale in target.iterdir():
        if stale.name not in wanted:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    for name in sorted(wanted):
        notebook = json.loads((source / name).read_text(encoding="utf-8"))
        for cell in notebook["cells"]:
            if cell["cell_type"] == "markdown":
                cell["source"] = site_markdown("".join(cell["source"]))
            tags = cell.get("metadata", {}).get("tags", [])
            if "solution" in tags:  # a reader tries the exercise first, then opens the solution
                tags.append("hide-input")
            if "check" in tags:  # the grader's hidden tests are not for the reader
                cell["source"] = HIDDEN.sub("", "".join(cell["source"]))
        text = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"
        if not (target / name).exists() or (target / name).read_text(encoding="utf-8") != text:
            (target / name).write_text(text, encoding="utf-8")


copy_chapters(ROOT / "chapters", DOCS / "chapters")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",
]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
html_static_path = ["_static"]

myst_enable_extensions = ["dollarmath", "amsmath"]
nb_execution_mode = "force"
nb_execution_timeout = 1800  # per cell: chapter 04's full training is minutes on a laptop CPU
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_in_temp = True  # chapter 04 resumes from outputs/ it wrote: start clean every time
nb_ipywidgets_js = {}  # widget JavaScript would come from a CDN; the static figures stay


async def get_msg_polling_each_second(self, timeout=None):
    """AsyncZMQSocketChannel.get_msg, but polling in slices of at most a second.

    myst-nb executes with nbclient, which awaits each cell's reply with one zmq.asyncio poll of
    nb_execution_timeout. After a cell showing an ipywidgets `interact` (ddlearn.viz.explore),
    that poll can miss the reply's wake-up and return only at its timeout: the build stalled for
    the whole timeout. Measured on a 30-cell notebook of `interact` cells, 20 s timeout: 8 of 12
    runs stalled 1-3 cells for the full 20 s (a run: 1.4 s, stalled 21-62 s); polling each second,
    the slowest of 12 runs took 4.3 s. The blocking client nbval uses never stalled (240 cells).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
        if await self.socket.poll(int(left * 1000)):
            return await self._recv()
        if deadline is not None and time.monotonic() >= deadline:
            raise Empty


AsyncZMQSocketChannel.get_msg = get_msg_polling_each_second

# --------------------------------------------------------------------------------------------------
# The API reference: every module, recursively (docs/api/ is generated; _templates/autosummary)
# --------------------------------------------------------------------------------------------------
autosummary_generate = True
autodoc_member_order = "bysource"  # read order = build order, as in the source
autodoc_preserve_defaults = True
add_module_names = False
python_maximum_signature_line_length = 99
default_role = "code"  # `x` in RST (autosummary's summaries) as in Markdown
shutil.rmtree(DOCS / "api", ignore_errors=True)  # no stale page of a module that is gone


class MarkdownDirective(SphinxDirective):
    """`.. markdown::` parses its content as MyST, the way docutils' include :parser: does."""

    has_content = True

    def run(self) -> list[nodes.Node]:
        document = new_document(self.env.docname, self.state.document.settings)
        MystParser().parse("\n".join(self.content), document)
        for raw in list(document.findall(nodes.raw)):  # `<name>` in a docstring is text, not HTML
            raw.replace_self(nodes.Text(raw.astext()))
        return document.children


def markdown_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    """Hand a docstring to `.. markdown::`; autosummary's one-line summaries keep the raw text."""
    if lines and not Autosummary.running:
        lines[:] = [".. markdown::", ""] + [f"   {line}" for line in lines]


class Autosummary(autosummary.Autosummary):
    """autosummary, whose tables quote each docstring's first sentence: it gets the raw text (read
    as RST, `x` as code: default_role), since `.. markdown::` has no first sentence to take."""

    running = False

    def get_items(self, names):
        Autosummary.running = True
        try:
            return super().get_items(names)
        finally:
            Autosummary.running = False


def source_page_for_every_module(app):
    """viewcode writes a source page only for modules it saw a documented object of; package
    __init__ files that only re-export would have none, so register those too (viewcode's
    `env._viewcode_modules`: module -> (code, tags, used, refname)). Yields no pages itself."""
    if not hasattr(app.env, "_viewcode_modules"):
        app.env._viewcode_modules = {}
    modules = app.env._viewcode_modules
    for path in sorted((ROOT / "ddlearn").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if not modules.get(name):
            analyzer = ModuleAnalyzer.for_module(name)
            analyzer.find_tags()
            modules[name] = (analyzer.code, analyzer.tags, {}, name)
    return []


def setup(app):
    app.add_directive("markdown", MarkdownDirective)
    app.add_directive("autosummary", Autosummary, override=True)
    app.connect("autodoc-process-docstring", markdown_docstring)
    app.connect("html-collect-pages", source_page_for_every_module, priority=400)


# --------------------------------------------------------------------------------------------------
# The theme: links to the repository are fine, loads from the network are not
# --------------------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "ddlearn"
html_favicon = "_static/favicon.svg"  # else the browser asks for /favicon.ico, which 404s
html_context = {"default_mode": "auto"}  # light or dark as the reader's system says
html_theme_options = {
    "repository_url": REPO,
    "repository_branch": "main",
    "path_to_docs": "docs",
    "use_repository_button": True,
    "use_download_button": True,
    "show_toc_level": 2,
}
