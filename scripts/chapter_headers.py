"""The two cells every chapter opens with, built from the one repository URL in pyproject.toml.

Cell 1 (markdown) ends with an "Open in Colab" badge for that chapter; cell 2 (code) installs
ddlearn on Colab and does nothing anywhere else. Both are generated here, so the address is
written once (`[project.urls] Repository`) and a fork changes it in one place:

    python scripts/chapter_headers.py           # rewrite the badge and install cell of chapters/*
    python scripts/chapter_headers.py --check   # exit 1 if a chapter differs (tests run this)
"""

import argparse
import json
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
INSTALL_CELL = '''\
# On Colab: install ddlearn (code + shipped checkpoints) from {url}.
# Anywhere else this cell does nothing. Re-running it is harmless; no restart is needed.
import importlib, os, subprocess, sys

try:
    import google.colab  # noqa: F401  (only Colab has it)
    ON_COLAB = True
except ImportError:
    ON_COLAB = False
if ON_COLAB:  # DDLEARN_INSTALL_SOURCE: another source for pip (a fork, a tag, a local folder)
    source = os.environ.get("DDLEARN_INSTALL_SOURCE", "git+{url}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", source], check=True)
    importlib.invalidate_caches()  # so the next cell's `import ddlearn` sees the new package'''


def repository_url() -> str:
    """`[project.urls] Repository` of pyproject.toml, without a trailing slash."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["urls"]["Repository"].rstrip("/")


def colab_badge(notebook: str, branch: str = "main") -> str:
    """The badge that opens `notebook` (a path inside the repository) in Colab."""
    slug = repository_url().removeprefix("https://github.com/")
    link = f"https://colab.research.google.com/github/{slug}/blob/{branch}/{notebook}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def install_cell() -> str:
    return INSTALL_CELL.format(url=repository_url())


def with_headers(notebook: dict, path: str) -> dict:
    """`notebook` with its badge (in the first, markdown cell) and install cell (second) rebuilt."""
    title, install = notebook["cells"][0], notebook["cells"][1]
    text = "".join(title["source"])
    if title["cell_type"] != "markdown" or not BADGE.search(text):
        raise ValueError(f"{path}: the first cell must be markdown holding the Colab badge")
    if install["cell_type"] != "code":
        raise ValueError(f"{path}: the second cell must be the install (code) cell")
    title = {**title, "source": BADGE.sub(lambda _: colab_badge(path), text).splitlines(True)}
    install = {**install, "source": install_cell().splitlines(True)}
    return {**notebook, "cells": [title, install, *notebook["cells"][2:]]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report chapters that differ")
    args = parser.parse_args(argv)
    stale = []
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        updated = with_headers(notebook, path.relative_to(ROOT).as_posix())
        if updated != notebook:
            stale.append(path.name)
            if not args.check:
                path.write_text(json.dumps(updated, indent=1, ensure_ascii=False) + "\n")
    verb = "differ from" if args.check else "rewritten from"
    print(f"{len(stale)} chapter(s) {verb} {repository_url()}: {', '.join(stale) or '-'}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
