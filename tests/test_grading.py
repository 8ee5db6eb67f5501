"""The grader (`python -m ddlearn.grade`) on a two-exercise assignment, and on bad submissions.

tests/fixtures/grading/mini_assignment.ipynb is an instructor edition with two exercises (2 + 1
points). Every submission below is made from its student edition the way a student makes one: by
editing, deleting or moving cells. They are graded together in one run, so a bad one is also
shown not to stop the others. The real chapters are graded in tests/test_grading_chapters.py.
"""

import json
import re
from pathlib import Path

import pytest

from ddlearn.grade.__main__ import main
from ddlearn.grade.editions import HIDDEN, exercises, load, save, source, student_edition, tags

MINI = Path(__file__).parent / "fixtures" / "grading" / "mini_assignment.ipynb"
VELOCITY = ("def velocity(x0, noise, alphas_cumprod, t):\n"
            "    a = alphas_cumprod[t].view(-1, 1, 1, 1)\n"
            "    return a.sqrt() * noise - (1 - a).sqrt() * x0")
FLOW = ("def flow_noised(x0, noise, sigma):\n"
        "    sigma = sigma.view(-1, *[1] * (x0.ndim - 1))\n"
        "    return (1 - sigma) * x0 + sigma * noise")


def answered(notebook: dict, **answers) -> dict:
    """The notebook with the exercise cells' sources replaced (exercise id -> source)."""
    notebook = json.loads(json.dumps(notebook))
    for cell in notebook["cells"]:
        exercise = cell["metadata"].get("ddlearn", {}).get("exercise")
        if "exercise" in tags(cell) and exercise in answers:
            cell["source"] = answers[exercise]
    return notebook


def without(notebook: dict, exercise: str) -> dict:
    """The notebook with one exercise cell deleted and the remaining cells reversed."""
    cells = [c for c in notebook["cells"]
             if not ("exercise" in tags(c) and c["metadata"]["ddlearn"]["exercise"] == exercise)]
    return {**notebook, "cells": cells[::-1]}


STUDENT = student_edition(load(MINI), MINI.name)
SUBMISSIONS = {  # student -> (notebook or raw text, expected points, words in the reasons)
    "alice_instructor": (load(MINI), {"velocity": 2, "flow_noised": 1}, {}),
    "bob_blank": (STUDENT, {"velocity": 0, "flow_noised": 0},
                  {"velocity": "not implemented", "flow_noised": "not implemented"}),
    "carol_partial": (answered(STUDENT, velocity=VELOCITY, flow_noised=FLOW.replace(
        "(1 - sigma) * x0 + sigma * noise", "sigma * x0 + (1 - sigma) * noise")),
        {"velocity": 2, "flow_noised": 0}, {"flow_noised": "flow_noised"}),
    "dave_loop": (answered(STUDENT, velocity="while True:\n    pass", flow_noised=FLOW),
                  {"velocity": 0, "flow_noised": 1}, {"velocity": "time limit"}),
    "erin_syntax": (answered(STUDENT, velocity="def velocity(x0, noise, abar, t)\n    return x0",
                             flow_noised=FLOW),
                    {"velocity": 0, "flow_noised": 1}, {"velocity": "SyntaxError"}),
    "frank_deleted": (without(answered(STUDENT, flow_noised=FLOW), "velocity"),
                      {"velocity": 0, "flow_noised": 1}, {"velocity": "missing"}),
    "grace_raise": (answered(STUDENT, velocity=VELOCITY, flow_noised=FLOW + "\nraise ValueError"),
                    {"velocity": 2, "flow_noised": 1}, {}),
    "heidi_writes": (answered(STUDENT, flow_noised=FLOW, velocity=VELOCITY.replace(
        "    a =", "    open('/tmp/ddlearn-grading-escape.txt', 'w').write('x')\n    a =")),
        {"velocity": 0, "flow_noised": 1}, {"velocity": "outside the notebook's folder"}),
    "ivan_not_a_notebook": ("%PDF-1.4 this is not a notebook", {"velocity": 0, "flow_noised": 0},
                            {"velocity": "not a notebook"}),
    "judy_calls_ddlearn": (answered(STUDENT, flow_noised=FLOW, velocity=(
        "from ddlearn.losses import target_for\nfrom ddlearn.schedulers.ddpm import "
        "DDPMScheduler\n\ndef velocity(x0, noise, alphas_cumprod, t):\n    return target_for("
        "DDPMScheduler(prediction_type='v_prediction'), x0, noise, t)")),
        {"velocity": 0, "flow_noised": 1}, {"velocity": "ddlearn's own"}),
    "ken_kills_kernel": (answered(STUDENT, velocity=VELOCITY,
                                  flow_noised="import os\nos._exit(3)"),
                         {"velocity": 2, "flow_noised": 0}, {"flow_noised": "stopped"}),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every submission above in one run; return (grades.csv rows, results.json dir)."""
    root = tmp_path_factory.mktemp("grading")
    for student, (notebook, _, _) in SUBMISSIONS.items():
        path = root / "submissions" / f"{student}.ipynb"
        if isinstance(notebook, str):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(notebook)
        else:
            save(notebook, path)
    Path("/tmp/ddlearn-grading-escape.txt").unlink(missing_ok=True)
    assert main(["grade", str(MINI), str(root / "submissions"), "--out", str(root / "grades"),
                 "--jobs", "2", "--cell-timeout", "20", "--timeout", "120"]) == 0
    import csv
    rows = {row["student"]: row for row in csv.DictReader(open(root / "grades" / "grades.csv"))}
    return rows, root / "grades" / "results"


@pytest.mark.parametrize("student", SUBMISSIONS)
def test_each_submission_gets_its_points_and_reasons(graded, student):
    rows, _ = graded
    _, points, words = SUBMISSIONS[student]
    row = rows[student]
    assert {e: float(row[e]) for e in points} == points, row["lost points"]
    assert float(row["total"]) == sum(points.values()) and row["out of"] == "3"
    for exercise, word in words.items():
        reason = next(r for r in row["lost points"].split(" | ") if r.startswith(exercise))
        assert word in reason, row["lost points"]


def test_a_write_outside_the_folder_was_refused_and_reported(graded):
    rows, _ = graded
    assert not Path("/tmp/ddlearn-grading-escape.txt").exists()
    assert "refused: writing outside" in rows["heidi_writes"]["lost points"]


def test_gradescope_results_json(graded):
    _, results = graded
    result = json.loads((results / "carol_partial.json").read_text())
    assert result["score"] == 2
    assert [(t["name"], t["score"], t["max_score"]) for t in result["tests"]] == \
        [("velocity", 2, 2), ("flow_noised", 0, 1)]
    assert "flow_noised" in result["tests"][1]["output"]


def test_student_edition_has_no_solution_and_no_hidden_tests():
    text = json.dumps(STUDENT)
    assert "a.sqrt() * noise" not in text and "hidden=True" not in text
    assert not any("solution" in tags(c) for c in STUDENT["cells"])
    assert "blob/main/student/mini_assignment.ipynb" in source(STUDENT["cells"][0])
    assert any("keep_going()" in source(c) for c in STUDENT["cells"])
    assert exercises(STUDENT) == {"velocity": 2, "flow_noised": 1}


def test_hidden_block_pattern_strips_only_the_block():
    text = "a\n    ### BEGIN HIDDEN TESTS\n    x(hidden=True)\n    ### END HIDDEN TESTS\nb\n"
    assert HIDDEN.sub("", text) == "a\nb\n"
    assert re.search("BEGIN", HIDDEN.sub("", text)) is None


def test_bad_command_lines_say_what_is_wrong(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["grade", str(MINI), str(tmp_path / "nowhere")])
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["grade", str(MINI), str(tmp_path)])
    assert "holds no submissions" in capsys.readouterr().err


def test_student_edition_runs_all_cells_outside_the_grader(tmp_path):
    """Jupyter's "Run All" on the student edition, no grader: every cell runs, and each unsolved
    check says so in red (stderr) and hands the next cells ddlearn's reference answer."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.reads(json.dumps(STUDENT), as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on error
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert stderr.count("❌") == 2 and "reference answer instead" in stderr
    assert "the last cell ran" in "".join(o.get("text", "") for o in outputs)
    assert "torch.Size([2, 3, 4, 4])" in "".join(o.get("text", "") for o in outputs)


def test_the_sandbox_refuses_writes_and_processes_but_not_reads(tmp_path):
    """`confine` in a fresh interpreter: what a notebook may and may not do under the grader."""
    import subprocess
    import sys

    folder, results = tmp_path / "work", tmp_path / "results.jsonl"
    folder.mkdir()
    script = f"""
import ctypes.util, os, subprocess
from ddlearn.grade.sandbox import confine
confine({str(folder)!r}, {str(results)!r})
open({str(folder / 'ok.txt')!r}, 'w').write('inside is fine')
open('/etc/hostname').read()  # reading is fine
ctypes.util.find_library('m')  # runs ldconfig: a read-only probe
for attempt in (lambda: open({str(tmp_path / 'outside.txt')!r}, 'w'),
                lambda: os.remove({str(results)!r} + '.x'),
                lambda: subprocess.run(['touch', {str(tmp_path / 'spawned')!r}]),
                lambda: os.system('true')):
    try:
        attempt()
        print('allowed')
    except PermissionError as error:
        print('refused:', error)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("refused: grading:") == 4 and "allowed" not in out.stdout.split("\n")
    assert (folder / "ok.txt").exists() and not (tmp_path / "outside.txt").exists()
    assert not (tmp_path / "spawned").exists()
    assert results.read_text().count("violation") == 4


def test_the_kernel_environment_keeps_every_cache_inside_the_folder(tmp_path, monkeypatch):
    """torch writes TORCHINDUCTOR_CACHE_DIR (/tmp/torchinductor_<user>) into os.environ once any
    test touches its cache; the grader's kernel must not inherit it, or its writes are refused."""
    from ddlearn.grade.sandbox import environment

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_someone")
    monkeypatch.setenv("XDG_CACHE_HOME", "/root/.cache")
    env = environment(tmp_path, tmp_path / "results.jsonl", threads=1, seed=3, quick=True)
    for key in ("HOME", "TMPDIR", "MPLCONFIGDIR", "IPYTHONDIR", "HF_HOME", "XDG_CACHE_HOME",
                "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        assert env[key].startswith(str(tmp_path)), (key, env[key])
    assert env["DDLEARN_HIDDEN_SEED"] == "3" and env["HF_HUB_OFFLINE"] == "1"
