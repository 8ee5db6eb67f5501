"""One instructor notebook, three editions: what each cell is, and what each edition keeps.

A chapter in `chapters/` is the **instructor edition**. Its exercises are three cells (nbgrader's
idea of answer, solution and test cells, kept in our own metadata under `"ddlearn"`):

| cell     | tags       | metadata `ddlearn`                      | student edition | autograder |
|----------|------------|-----------------------------------------|-----------------|------------|
| exercise | `exercise` | `{"exercise": "velocity"}`              | kept            | the answer |
| solution | `solution` |                                         | removed         | removed    |
| check    | `check`    | `{"exercise": "velocity", "points": 2}` | no hidden tests | kept whole |

A check cell holds its hidden tests between nbgrader's markers, before the public check (the public
check hands the reference on to later cells when an answer fails, so hidden tests must see the
learner's function first):

    ### BEGIN HIDDEN TESTS
    ch04.check_velocity(velocity, hidden=True)
    ### END HIDDEN TESTS
    velocity = ch04.check_velocity(velocity)

The **student edition** also gets a cell that turns on keep-going mode (`ddlearn.checks.runner`),
so "Run All" reaches the end with every exercise unsolved, and its Colab badge opens the student
notebook. The **autograder edition** is what `ddlearn.grade` fills with a student's answers.
"""

import copy
import json
import re
from pathlib import Path

HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[^\n]*\n.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?",
                    re.DOTALL | re.MULTILINE)
KEEP_GOING_CELL = """\
# Student edition: when an exercise is not solved yet, its check cell says what is wrong, and
# the cells below it use ddlearn's reference answer, so "Run All" always reaches the end.
from ddlearn.checks import keep_going

keep_going()"""


def source(cell: dict) -> str:
    text = cell.get("source", "")
    return "".join(text) if isinstance(text, list) else text


def tags(cell: dict) -> list:
    return cell.get("metadata", {}).get("tags", [])


def exercise_of(cell: dict):
    """The exercise id of an exercise or check cell (None for any other cell)."""
    return cell.get("metadata", {}).get("ddlearn", {}).get("exercise")


def exercises(notebook: dict) -> dict:
    """{exercise id: points}, in notebook order, read from the check cells."""
    return {exercise_of(c): c["metadata"]["ddlearn"].get("points", 1)
            for c in notebook["cells"] if "check" in tags(c) and exercise_of(c)}


def load(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save(notebook: dict, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n",
                          encoding="utf-8")


def _code_cell(text: str, cell_id: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": cell_id, "metadata": {},
            "outputs": [], "source": text}


def _cleared(notebook: dict, cells: list) -> dict:
    for cell in cells:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return {**notebook, "cells": cells}


def autograder_edition(notebook: dict) -> dict:
    """Solutions removed, hidden tests kept, outputs cleared."""
    cells = [copy.deepcopy(c) for c in notebook["cells"] if "solution" not in tags(c)]
    return _cleared(notebook, cells)


def student_edition(notebook: dict, name: str = "", folder: str = "student") -> dict:
    """Solutions and hidden tests removed, keep-going turned on, the badge pointing at `folder`.

    `name` is the notebook's file name: its Colab badge, which opened `chapters/<name>`, opens
    `<folder>/<name>` instead."""
    cells = []
    for cell in autograder_edition(notebook)["cells"]:
        if "check" in tags(cell):
            cell["source"] = HIDDEN.sub("", source(cell))
        if cell["cell_type"] == "markdown" and name:
            cell["source"] = source(cell).replace(f"/chapters/{name})", f"/{folder}/{name})")
        cells.append(cell)
    first_code = next(i for i, c in enumerate(cells) if c["cell_type"] == "code")
    cells.insert(first_code + 1, _code_cell(KEEP_GOING_CELL, "ddlearn-keep-going"))
    return {**notebook, "cells": cells}


def write_editions(chapter, out) -> tuple:
    """Write `out/student/<name>` and `out/autograder/<name>`; return both paths."""
    chapter, out = Path(chapter), Path(out)
    notebook = load(chapter)
    student, autograder = out / "student" / chapter.name, out / "autograder" / chapter.name
    save(student_edition(notebook, chapter.name), student)
    save(autograder_edition(notebook), autograder)
    return student, autograder
