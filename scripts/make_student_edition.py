"""Build the student edition of the chapters: solution cells removed, outputs cleared.

In chapters/*.ipynb every exercise is an `exercise` cell (a stub raising NotImplementedError)
followed by a `solution` cell (the instructor's answer, tagged "solution") and a check cell. The
student edition drops the solution cells, so the check fails with a hint until the learner writes
their own.

    python scripts/make_student_edition.py            # -> student/NN_*.ipynb
"""

import argparse
import json
from pathlib import Path


def strip_solutions(notebook: dict) -> dict:
    tags = lambda cell: cell.get("metadata", {}).get("tags", [])
    cells = [c for c in notebook["cells"] if "solution" not in tags(c)]
    for cell in cells:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return {**notebook, "cells": cells}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chapters", default="chapters")
    parser.add_argument("--out", default="student")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(args.chapters).glob("*.ipynb")):
        notebook = strip_solutions(json.loads(path.read_text()))
        (out / path.name).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
        print(f"{path} -> {out / path.name}")


if __name__ == "__main__":
    main()
