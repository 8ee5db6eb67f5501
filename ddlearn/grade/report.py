"""Write grades out: one CSV for the course, one Gradescope `results.json` per submission.

The CSV has a row per student: the points of each exercise, the total, and `lost points`, a
reason for each exercise that did not earn its points plus notes about the whole submission
(a time limit, a refused write, a deleted cell). Gradescope's format is documented at
https://gradescope-autograders.readthedocs.io/en/latest/specs/ (`score`, `output`, `tests` with
`name`, `score`, `max_score`, `output`).
"""

import csv
import json
import os
import tempfile
from pathlib import Path


def _atomic_write(path: Path, text: str):
    """Write `text` to `path` through a temporary file, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
        file.write(text)
    os.replace(tmp, path)


def lost_points(grade) -> str:
    reasons = [reason if reason.startswith(f"{exercise}:") else f"{exercise}: {reason}"
               for exercise, reason in grade.reasons.items()]
    return " | ".join(grade.notes + reasons)


def write_csv(grades: list, path: Path):
    """grades.csv: student, one column per exercise, total, out of, lost points."""
    exercises = list(grades[0].possible) if grades else []
    rows = [["student", *exercises, "total", "out of", "lost points"]]
    for grade in grades:
        rows.append([grade.student, *[grade.points[e] for e in exercises], grade.total,
                     sum(grade.possible.values()), lost_points(grade)])
    with tempfile.TemporaryFile("w+", newline="", encoding="utf-8") as buffer:
        csv.writer(buffer).writerows(rows)
        buffer.seek(0)
        _atomic_write(Path(path), buffer.read())


def gradescope(grade) -> dict:
    """The results.json Gradescope reads from /autograder/results/."""
    tests = [{"name": exercise, "score": grade.points[exercise], "max_score": points,
              "output": grade.reasons.get(exercise, "passed, public and hidden checks"),
              "visibility": "visible"} for exercise, points in grade.possible.items()]
    return {"score": grade.total, "output": "\n".join(grade.notes), "tests": tests,
            "execution_time": round(grade.seconds, 1)}


def write_gradescope(grade, path: Path):
    _atomic_write(Path(path), json.dumps(gradescope(grade), indent=1, ensure_ascii=False) + "\n")


SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, with internet, when it builds the autograder image.
set -euo pipefail
apt-get update -q && apt-get install -y -q python3-venv python3-pip
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install -q "{source}"
"""
RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission (offline is fine: ddlearn grades on shipped data).
cd /autograder/source
/autograder/venv/bin/python -m ddlearn.grade grade {chapter} /autograder/submission \\
    --out /autograder/grades --gradescope /autograder/results/results.json
"""


def write_gradescope_zip(chapter: Path, autograder: dict, source: str, path: Path):
    """autograder.zip for Gradescope's "Upload zip": setup.sh, run_autograder, the chapter."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in (("setup.sh", SETUP_SH.format(source=source)),
                           ("run_autograder", RUN_AUTOGRADER.format(chapter=chapter.name))):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16  # executable
            archive.writestr(info, text)
        archive.writestr(chapter.name, json.dumps(autograder, indent=1, ensure_ascii=False))
