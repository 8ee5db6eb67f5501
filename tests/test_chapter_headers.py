"""Every chapter opens with the badge and install cell built from pyproject.toml's repository URL,
and every link into the repository points at a file that exists."""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from chapter_headers import colab_badge, install_cell, repository_url, with_headers  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def text_of(notebook: dict) -> str:
    return "\n".join("".join(cell["source"]) for cell in notebook["cells"])


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_opens_with_the_generated_badge_and_install_cell(path):
    notebook = json.loads(path.read_text())
    name = f"chapters/{path.name}"
    assert with_headers(notebook, name) == notebook, (
        f"{name}: badge or install cell differ from pyproject.toml's Repository URL; "
        f"run `python scripts/chapter_headers.py`")
    assert colab_badge(name) in "".join(notebook["cells"][0]["source"])
    assert "".join(notebook["cells"][1]["source"]) == install_cell()


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_links_into_the_repository_use_its_url_and_existing_files(path):
    text = text_of(json.loads(path.read_text()))
    url = repository_url()
    slug = url.removeprefix("https://github.com/")
    for other in re.findall(r"github\.com/([\w.-]+/[\w.-]*[\w-])", text):
        assert other == slug, f"{path.name} links to github.com/{other}, not to {url}"
    files = re.findall(re.escape(url) + r"/blob/main/([\w./-]+)", text)
    assert any(f.startswith("ddlearn/") for f in files), f"{path.name} links to no ddlearn file"
    for name in files:
        assert (ROOT / name).is_file(), f"{path.name} links to {name}, which does not exist"


def test_readme_badges_and_links_follow_the_url():
    readme = (ROOT / "README.md").read_text()
    slug = repository_url().removeprefix("https://github.com/")
    for path in CHAPTERS:
        assert colab_badge(f"chapters/{path.name}") in readme, f"README: no badge for {path.name}"
    for other in re.findall(r"github\.com/([\w.-]+/[\w.-]*[\w-])", readme):
        assert other == slug, f"README links to github.com/{other}, not to {repository_url()}"


def test_badges_follow_the_url(monkeypatch, tmp_path):
    """Change the URL in one place and the generated cells follow it."""
    import chapter_headers

    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n[project.urls]\n'
                         'Repository = "https://github.com/someone/fork/"\n')
    monkeypatch.setattr(chapter_headers, "ROOT", tmp_path)
    assert "github/someone/fork/blob/main/chapters/01_x.ipynb" in colab_badge("chapters/01_x.ipynb")
    assert '"git+https://github.com/someone/fork"' in install_cell()
