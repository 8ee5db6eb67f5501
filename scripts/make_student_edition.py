"""Build the student edition of every chapter into student/ (committed: Colab opens it from there).

In chapters/*.ipynb every exercise is an `exercise` cell (a stub raising NotImplementedError), a
`solution` cell and a `check` cell (see `ddlearn.grade.editions`). The student edition drops the
solutions and the hidden tests and turns on keep-going mode, so "Run All" reaches the end with
every exercise unsolved; its Colab badge opens student/<chapter>.

    python scripts/make_student_edition.py            # rewrite student/*.ipynb
    python scripts/make_student_edition.py --check    # exit 1 if student/ is out of date (tests)

To hand out one chapter with its autograder edition: `python -m ddlearn.grade assign CHAPTER`.
"""

import argparse
import json
import sys
from pathlib import Path

from ddlearn.grade.editions import load, student_edition

ROOT = Path(__file__).resolve().parents[1]


def editions(chapters: Path) -> dict:
    """{file name: the student edition's JSON text} for every chapter."""
    return {path.name: json.dumps(student_edition(load(path), path.name), indent=1,
                                  ensure_ascii=False) + "\n"
            for path in sorted(chapters.glob("[0-9][0-9]_*.ipynb"))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chapters", type=Path, default=ROOT / "chapters")
    parser.add_argument("--out", type=Path, default=ROOT / "student")
    parser.add_argument("--check", action="store_true", help="only say whether --out is current")
    args = parser.parse_args(argv)
    stale = []
    for name, text in editions(args.chapters).items():
        path = args.out / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            args.out.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"{args.chapters / name} -> {path}")
    if args.check and stale:
        print(f"{args.out} is out of date for {', '.join(stale)}: run "
              f"python scripts/make_student_edition.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
