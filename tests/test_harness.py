"""The test harness itself: nbval must catch a broken notebook, chapters/ must not be empty, and
`.ci/run` must run exactly the test command the README gives."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def run_nbval(notebook: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run nbval on a copy of `notebook` in an isolated folder (no project conftest or ini)."""
    shutil.copy(notebook, tmp_path / notebook.name)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--nbval-lax", notebook.name], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)


def test_nbval_fails_on_a_notebook_that_raises(tmp_path):
    result = run_nbval(FIXTURES / "failing.ipynb", tmp_path)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "this notebook is broken on purpose" in result.stdout


def test_nbval_passes_on_a_notebook_that_runs(tmp_path):
    result = run_nbval(FIXTURES / "passing.ipynb", tmp_path)
    assert result.returncode == 0, result.stdout[-2000:]


def chapter_files():
    return sorted(p.name for p in (ROOT / "chapters").glob("*.ipynb"))


def test_chapters_exist_and_are_numbered():
    names = chapter_files()
    assert names, "chapters/ has no notebooks: nbval would pass without testing anything"
    for name in names:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", name), f"{name} is not named NN_name.ipynb"


@pytest.mark.parametrize("name", chapter_files())
def test_chapter_is_a_valid_notebook_listed_in_the_readme(name):
    notebook = json.loads((ROOT / "chapters" / name).read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert code, f"{name} has no code cells"
    assert f"chapters/{name}" in (ROOT / "README.md").read_text(), f"README does not list {name}"


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- test-command -->\s*```bash\n(.+?)\n```", readme, re.S)
    assert match, "README.md lost its marked test command block"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command_verbatim():
    command = readme_test_command()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci
    for switch in ("HF_HUB_OFFLINE=1", "HF_DATASETS_OFFLINE=1", "DDLEARN_QUICK=1"):
        assert switch in command
