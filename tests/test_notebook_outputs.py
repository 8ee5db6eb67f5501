"""No chapter shows a warning or a junk output line: the check runs inside the nbval run itself.

chapters/conftest.py inspects every cell's outputs while `pytest --nbval-lax` executes the
chapters (no second execution). These tests prove that check can fail, on a fixture notebook with
a warning and a function repr, and that it leaves pictures and printed text alone.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "chapters" / "conftest.py"
FIXTURE = Path(__file__).parent / "fixtures" / "junk_outputs.ipynb"


def load_hook():
    spec = importlib.util.spec_from_file_location("chapter_output_check", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stream(name, text):
    return {"output_type": "stream", "name": name, "text": text}


def result(text_plain, **data):
    return {"output_type": "execute_result", "data": {"text/plain": text_plain, **data}}


@pytest.mark.parametrize("output, problem", [
    (stream("stderr", "UserWarning: DDIMScheduler: ignoring config keys"), "wrote to stderr"),
    (stream("stderr", " 40%|████      | 20/50 [00:01<00:02, 14.2it/s]"), "wrote to stderr"),
    (result("<function ddlearn.viz.explore.<locals>.<lambda>(**kw)>"), "shows a bare object repr"),
    (result("<ddlearn.pipelines.ddpm.DDPMPipeline at 0x7f3a2c1d5e10>"), "shows a bare object repr"),
    (result("<generator object <genexpr> at 0x7f3a2c1d5e10>"), "shows a bare object repr"),
    (result("<bound method DiffusionPipeline.to of <...>>"), "shows a bare object repr"),
])
def test_warnings_and_bare_reprs_are_problems(output, problem):
    problems = load_hook().output_problems([output])
    assert len(problems) == 1 and problems[0].startswith(problem)


@pytest.mark.parametrize("output", [
    stream("stdout", "quick mode: True\n<function f> printed on purpose is the cell's choice\n"),
    result("<PIL.Image.Image image mode=RGB size=400x100>", **{"image/png": "iVBOR..."}),
    result("<Figure size 700x350 with 1 Axes>", **{"image/png": "iVBOR..."}),
    result("interactive(children=(SelectionSlider(description='t', options=(0, 25)),))"),
    result("tensor([999, 899, 799])"),
])
def test_pictures_printed_text_and_values_are_fine(output):
    assert load_hook().output_problems([output]) == []


def test_the_check_fails_the_noisy_cells_of_a_notebook_under_nbval(tmp_path):
    """The fixture's warning cell and function-repr cell fail; its clean cells pass."""
    shutil.copy(FIXTURE, tmp_path / FIXTURE.name)
    shutil.copy(HOOK, tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "--nbval-lax", FIXTURE.name], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert "2 failed, 2 passed" in run.stdout, run.stdout[-3000:]
    assert "wrote to stderr" in run.stdout and "a warning a learner would see" in run.stdout
    assert "shows a bare object repr: <function __main__.explore(**kwargs)>" in run.stdout
