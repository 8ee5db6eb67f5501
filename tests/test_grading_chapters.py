"""Every chapter as an assignment: the instructor edition scores full marks, the student edition
scores 0 with every exercise named (and runs to its last cell), and a committed submission of
wrong answers scores exactly its expected partial marks. Also: student/ is up to date.

The three submissions of a chapter are graded the way an instructor grades them (the grader's
sandbox, quick mode, offline), two at a time.
"""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ddlearn.grade.editions import autograder_edition, exercises, load, save, student_edition, tags
from ddlearn.grade.score import Limits, grade

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "grading"))
from wrong_answers import ANSWERS, POINTS, REASONS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))


def answered(notebook: dict, answers: dict) -> dict:
    cells = []
    for cell in notebook["cells"]:
        exercise = cell["metadata"].get("ddlearn", {}).get("exercise")
        if "exercise" in tags(cell) and exercise in answers:
            cell = {**cell, "source": answers[exercise]}
        cells.append(cell)
    return {**notebook, "cells": cells}


@pytest.fixture(scope="module", params=CHAPTERS, ids=lambda p: p.name[:2])
def graded(request, tmp_path_factory):
    chapter = request.param
    root = tmp_path_factory.mktemp(chapter.stem)
    instructor = load(chapter)
    student = student_edition(instructor, chapter.name)
    notebooks = {"instructor": instructor, "student": student,
                 "wrong": answered(student, ANSWERS[chapter.name])}
    for name, notebook in notebooks.items():
        save(notebook, root / f"{name}.ipynb")
    assignment = autograder_edition(instructor)
    with ThreadPoolExecutor(2) as pool:
        grades = pool.map(lambda name: grade(root / f"{name}.ipynb", assignment, name,
                                             Limits(cell_timeout=300, timeout=1200)), notebooks)
    return chapter.name, dict(zip(notebooks, grades, strict=True))


def test_instructor_edition_scores_full_marks(graded):
    name, grades = graded
    result = grades["instructor"]
    assert result.points == result.possible, result.reasons
    assert result.total >= 3 and not result.notes, result.notes


def test_student_edition_scores_zero_and_names_every_exercise(graded):
    name, grades = graded
    result = grades["student"]
    assert result.total == 0
    assert set(result.reasons) == set(result.possible)
    for exercise, reason in result.reasons.items():
        assert "not implemented" in reason, (exercise, reason)


def test_student_edition_runs_every_cell_with_unsolved_exercises(graded):
    """'Run All' reaches the last cell: no cell raised, each check fell back to the reference."""
    _, grades = graded
    assert grades["student"].cell_errors == []
    assert grades["instructor"].cell_errors == []


def test_wrong_answers_score_exactly_their_partial_marks(graded):
    name, grades = graded
    result = grades["wrong"]
    assert result.points == POINTS[name], result.reasons
    for exercise, words in REASONS[name].items():
        assert words in result.reasons[exercise], result.reasons[exercise]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name[:2])
def test_every_exercise_has_points_and_hidden_tests(chapter):
    notebook = load(chapter)
    points = exercises(notebook)
    assert len(points) >= 3 and all(p > 0 for p in points.values())
    stubs = [c for c in notebook["cells"] if "exercise" in tags(c)]
    assert len(stubs) == len(points)
    for cell in notebook["cells"]:
        if "check" in tags(cell):
            assert "### BEGIN HIDDEN TESTS" in "".join(cell["source"]), cell["source"]


def test_student_folder_is_the_current_student_edition():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_student_edition.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name[:2])
def test_student_files_hold_no_solution_and_no_hidden_test(chapter):
    text = (ROOT / "student" / chapter.name).read_text(encoding="utf-8")
    assert "BEGIN HIDDEN TESTS" not in text and "hidden=True" not in text
    assert f"blob/main/student/{chapter.name}" in text
    assert f"blob/main/chapters/{chapter.name}" not in text
    cells = load(ROOT / "student" / chapter.name)["cells"]
    student = "\n".join("".join(c["source"]) for c in cells)
    for cell in load(chapter)["cells"]:
        if "solution" in tags(cell):
            code = "".join(cell["source"])
            body = code[code.index("\n", code.index("def ")) + 1:]  # after the def line
            assert body.strip() and body not in student, body
