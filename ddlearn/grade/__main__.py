"""The command line: hand a chapter out, then grade what comes back.

    python -m ddlearn.grade assign CHAPTER --out DIR
        DIR/student/<chapter>     give this to students (no solutions, no hidden tests)
        DIR/autograder/<chapter>  keep this (hidden tests); `grade` can also read the chapter itself

    python -m ddlearn.grade grade CHAPTER SUBMISSIONS --out DIR [--jobs 2] [--seed N]
        SUBMISSIONS: a folder with one file or one sub-folder per student (`alice.ipynb`,
        `bob/04_training_butterflies.ipynb`, ...), or a single notebook
        DIR/grades.csv            points per exercise, total, and a reason for each lost point
        DIR/results/<student>.json  Gradescope's results.json for each student
        --gradescope PATH         grade one submission (SUBMISSIONS: its file, or a folder
                                  holding it, as Gradescope's /autograder/submission) and write
                                  its results.json to PATH

    python -m ddlearn.grade gradescope CHAPTER --out autograder.zip [--source PIP_SOURCE]
        the zip for Gradescope's programming assignment ("Upload zip"): setup.sh installs
        ddlearn, run_autograder runs the command above on each submission

Each submission runs in its own process and temporary folder, offline, in quick mode, with a time
limit per cell (--cell-timeout) and per notebook (--timeout). A bad one never stops the others.
"""

import argparse
import importlib.metadata
import importlib.util
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ddlearn.grade.editions import autograder_edition, load, write_editions
from ddlearn.grade.report import write_csv, write_gradescope, write_gradescope_zip
from ddlearn.grade.score import Limits, grade


def repository() -> str:
    """The project's repository URL, from the installed package's metadata (pyproject.toml)."""
    urls = importlib.metadata.metadata("ddlearn").get_all("Project-URL") or []
    return next((url.split(",", 1)[1].strip() for url in urls
                 if url.lower().startswith("repository")), "https://github.com/ddlearn/ddlearn")


def submissions(path: Path) -> list:
    """[(student, file)]: a file is one student; a folder holds one entry per student."""
    if path.is_file():
        return [(path.stem, path)]
    found = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = sorted(entry.glob("*.ipynb")) or sorted(f for f in entry.iterdir()
                                                           if f.is_file())
            if files:
                found.append((entry.name, files[0]))
        else:
            found.append((entry.stem, entry))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ddlearn.grade",
                                     description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    assign = commands.add_parser("assign", help="write the student and autograder editions")
    assign.add_argument("chapter", type=Path)
    assign.add_argument("--out", type=Path, default=Path("assignment"))
    run = commands.add_parser("grade", help="grade a folder of submissions")
    run.add_argument("chapter", type=Path, help="the chapter (instructor or autograder edition)")
    run.add_argument("submissions", type=Path)
    run.add_argument("--out", type=Path, default=Path("grades"))
    run.add_argument("--jobs", type=int, default=1, help="submissions graded at once")
    run.add_argument("--cell-timeout", type=int, default=120, help="seconds per cell")
    run.add_argument("--timeout", type=int, default=900, help="seconds per notebook")
    run.add_argument("--seed", type=int, default=0, help="seed of the hidden test cases")
    run.add_argument("--full", action="store_true", help="the chapters' full settings, not quick")
    run.add_argument("--gradescope", type=Path, help="write the one submission's results.json")
    zip_ = commands.add_parser("gradescope", help="write a Gradescope autograder zip")
    zip_.add_argument("chapter", type=Path)
    zip_.add_argument("--out", type=Path, default=Path("autograder.zip"))
    zip_.add_argument("--source", default=f"ddlearn[grade] @ git+{repository()}",
                      help="what setup.sh gives to pip install (a fork, a tag, a wheel URL)")
    args = parser.parse_args(argv)

    for path in [args.chapter] + ([args.submissions] if args.command == "grade" else []):
        if not path.exists():
            parser.error(f"{path} does not exist")
    if args.command == "assign":
        for path in write_editions(args.chapter, args.out):
            print(f"wrote {path}")
        return 0
    if args.command == "grade":
        missing = [m for m in ("nbclient", "nbformat", "ipykernel")
                   if importlib.util.find_spec(m) is None]
        if missing:
            parser.error(f"grading needs {', '.join(missing)}: pip install 'ddlearn[grade]' "
                         f"(or pip install -e '.[grade]' in a clone)")
    assignment = autograder_edition(load(args.chapter))
    if args.command == "gradescope":
        write_gradescope_zip(args.chapter, assignment, args.source, args.out)
        print(f"wrote {args.out}: upload it as the autograder of a programming assignment")
        return 0
    found = submissions(args.submissions)
    if args.gradescope and args.submissions.is_dir():  # one student's folder
        files = sorted(args.submissions.glob("*.ipynb")) or sorted(args.submissions.iterdir())
        found = [("submission", files[0])] if files else []
    if not found:
        parser.error(f"{args.submissions} holds no submissions")
    limits = Limits(args.cell_timeout, args.timeout, max(1, (os.cpu_count() or 1) // args.jobs),
                    args.seed, not args.full)

    def one(entry):
        student, path = entry
        result = grade(path, assignment, student, limits)
        write_gradescope(result, args.out / "results" / f"{student}.json")
        print(f"{student}: {result.total:g} / {sum(result.possible.values()):g} "
              f"({result.seconds:.0f} s)", flush=True)
        return result

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        grades = list(pool.map(one, found))
    write_csv(grades, args.out / "grades.csv")
    if args.gradescope:
        write_gradescope(grades[0], args.gradescope)
    print(f"wrote {args.out / 'grades.csv'} and {len(grades)} results.json in "
          f"{args.out / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
