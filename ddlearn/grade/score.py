"""Grade one submission: take its answers, run them in the autograder edition, score each exercise.

1. **Read** the submission. Anything that is not a notebook scores 0, with the reason.
2. **Take the answers**: for each exercise, the student's exercise cell (found by its metadata,
   else by the function it defines) and any cells the student added right after it. Everything
   else comes from the autograder edition, as nbgrader does with locked cells: a deleted or moved
   cell of the course costs nothing, and an edited check cannot pass itself.
3. **Run** the result in a sandbox (`ddlearn.grade.sandbox`): own process and folder, offline, a
   limit per cell and per notebook. Each check appends its public and hidden results to a file.
4. **Score**: an exercise earns its points when its check cell ran, every check in it (public and
   hidden) passed, and none was missing. Otherwise the reason is the first failure's message.
"""

import ast
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ddlearn.grade.editions import exercise_of, exercises, source, tags

SETUP = """\
import ddlearn.grade.sandbox as _sandbox
_sandbox.confine({folder!r}, {results!r})"""
BEGIN = "import ddlearn.checks.runner as _runner\n_runner.EXERCISE = {exercise!r}"
END = "_runner.EXERCISE = None"


@dataclass
class Grade:
    """One submission's result: points per exercise and why each lost point was lost."""

    student: str
    points: dict  # exercise -> points earned
    possible: dict  # exercise -> points available
    reasons: dict = field(default_factory=dict)  # exercise -> why it lost its points
    notes: list = field(default_factory=list)  # about the whole submission
    cell_errors: list = field(default_factory=list)  # "cell 12: NameError: ..." for every cell
    seconds: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.points.values())


def defined_names(text: str) -> set:
    """Top-level function names a cell defines (empty when it does not parse)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def answers(submission: dict, assignment: dict) -> tuple:
    """{exercise: [student cells]} and notes on what the student moved or deleted."""
    course = {source(c).strip() for c in assignment["cells"]}
    course_ids = {c.get("id") for c in assignment["cells"]}
    wanted = {exercise_of(c): defined_names(source(c))
              for c in assignment["cells"] if "exercise" in tags(c)}
    cells, found, current = submission["cells"], {}, None
    for cell in cells:
        exercise = exercise_of(cell) if "exercise" in tags(cell) else None
        if exercise is None and cell["cell_type"] == "code":
            exercise = next((e for e, names in wanted.items()
                             if names & defined_names(source(cell)) and e not in found), None)
        if exercise in wanted and exercise not in found:
            found[exercise], current = [cell], exercise
        elif current and cell.get("id") not in course_ids and source(cell).strip() not in course:
            found[current].append(cell)  # a cell the student added after their answer
        else:
            current = None
    notes = [f"{e}: the exercise cell is missing (deleted?)" for e in wanted if e not in found]
    return found, notes


def graded_notebook(submission: dict, assignment: dict, folder: str, results: str) -> tuple:
    """The autograder edition with the student's answers in, and the grader's cells added."""
    found, notes = answers(submission, assignment)
    code = lambda text: {"cell_type": "code", "metadata": {}, "outputs": [],
                         "execution_count": None, "source": text}
    cells = [code(SETUP.format(folder=folder, results=results))]
    for cell in assignment["cells"]:
        exercise = exercise_of(cell)
        if "exercise" in tags(cell):
            answer = found.get(exercise, [code(f"# (no answer for {exercise} was found)")])
            for student_cell in answer:
                if student_cell["cell_type"] == "code":
                    student_cell = code(source(student_cell))
                    student_cell["metadata"]["answer_for"] = exercise
                cells.append(student_cell)
        elif "check" in tags(cell):
            cells += [code(BEGIN.format(exercise=exercise)),
                      {**cell, "metadata": {**cell["metadata"], "grade_cell": True}},
                      code(END)]
        else:
            cells.append(cell)
    for cell in cells:
        cell.pop("id", None)
    return {**assignment, "cells": cells, "nbformat_minor": 4}, notes


def run(notebook: dict, folder: Path, results: Path, limits: "Limits") -> str:
    """Execute in a sandbox process; return '' or why the notebook did not finish."""
    from ddlearn.grade.sandbox import environment

    path = results.with_name("graded.ipynb")
    path.write_text(json.dumps(notebook), encoding="utf-8")
    command = [sys.executable, "-m", "ddlearn.grade.sandbox", str(path), str(folder),
               str(results), str(limits.cell_timeout)]
    env = environment(folder, results, limits.threads, limits.seed, limits.quick)
    process = subprocess.Popen(command, env=env,
                               cwd=folder, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        output, _ = process.communicate(timeout=limits.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return f"the notebook ran past its {limits.timeout} s limit and was stopped"
    if process.returncode != 0:
        last = output.decode(errors="replace").strip().splitlines() or ["(no output)"]
        return f"the notebook stopped before its end: {last[-1][:200]}"
    return ""


def error_of(cell: dict) -> str:
    """'NameError: ...' for a cell whose outputs hold an error, else ''."""
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if any(o["ename"] in ("CellTimeoutError", "KeyboardInterrupt") for o in errors):
        return "a time limit: the cell ran past it and was interrupted (an infinite loop?)"
    return f"{errors[0]['ename']}: {errors[0]['evalue']}"[:300] if errors else ""


@dataclass(frozen=True)
class Limits:
    """How a submission runs: seconds per cell and per notebook, threads, hidden seed, mode."""

    cell_timeout: int = 120
    timeout: int = 900
    threads: int = 1
    seed: int = 0  # the hidden cases' seed (DDLEARN_HIDDEN_SEED)
    quick: bool = True  # DDLEARN_QUICK: the chapters' short settings


def grade(path: Path, assignment: dict, student: str, limits: Limits = Limits()) -> Grade:
    """Grade the submission at `path` against `assignment` (an autograder edition)."""
    possible = exercises(assignment)
    result = Grade(student, dict.fromkeys(possible, 0), possible)
    start = time.perf_counter()
    try:
        submission = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(submission.get("cells"), list):
            raise ValueError("it has no list of cells")
    except (ValueError, UnicodeDecodeError, AttributeError) as error:
        result.notes.append(f"not a Jupyter notebook ({type(error).__name__}: {error})"[:200])
        result.reasons = dict.fromkeys(possible, "the submission is not a notebook")
        return result
    with tempfile.TemporaryDirectory(prefix="ddlearn-grade-") as tmp:
        folder, results = Path(tmp) / "work", Path(tmp) / "results.jsonl"
        folder.mkdir()
        results.touch()
        notebook, notes = graded_notebook(submission, assignment, str(folder), str(results))
        result.notes += notes
        stopped = run(notebook, folder, results, limits)
        lines = [json.loads(line) for line in results.read_text().splitlines() if line]
        executed = results.with_name("executed.ipynb")
        cells = json.loads(executed.read_text())["cells"] if executed.exists() else []
    if stopped:
        result.notes.append(stopped)
    result.notes += sorted({f"refused: {line['violation']}" for line in lines
                            if "violation" in line})
    check_errors = {cell["metadata"]["ddlearn"]["exercise"]: error_of(cell) for cell in cells
                    if cell.get("metadata", {}).get("grade_cell")}
    result.cell_errors = [f"cell {i}: {error_of(c)}" for i, c in enumerate(cells) if error_of(c)]
    answer_errors = {}
    for cell in cells:
        exercise = cell.get("metadata", {}).get("answer_for")
        if exercise and error_of(cell) and exercise not in answer_errors:
            answer_errors[exercise] = error_of(cell)
    has_hidden = {exercise_of(c): "### BEGIN HIDDEN TESTS" in source(c)
                  for c in assignment["cells"] if "check" in tags(c)}
    for exercise in possible:
        records = [line for line in lines if line.get("exercise") == exercise]
        failed = [line["message"] for line in records if not line["passed"]]
        hidden = any(line["kind"] == "hidden" for line in records)
        if exercise not in check_errors or (stopped and not records):
            reason = stopped or "its check never ran"
        elif exercise in answer_errors and not (records and not failed):
            reason = f"your exercise cell raised {answer_errors[exercise]}"
        elif failed:
            reason = failed[0]
        elif check_errors[exercise]:
            reason = f"its check cell raised {check_errors[exercise]}"
        elif not records or (has_hidden[exercise] and not hidden):
            reason = "its checks did not all run"
        else:
            result.points[exercise] = possible[exercise]
            if exercise in answer_errors:
                result.notes.append(f"{exercise} passed, but its cell raised "
                                    f"{answer_errors[exercise]}")
            continue
        result.reasons[exercise] = reason
    result.seconds = time.perf_counter() - start
    return result
