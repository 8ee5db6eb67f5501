"""Assignments from the chapters: student and autograder editions, grading, grade export.

    python -m ddlearn.grade assign chapters/04_training_butterflies.ipynb --out handout/
    python -m ddlearn.grade grade chapters/04_training_butterflies.ipynb submissions/ --out grades/

| module        | what it does                                                              |
|---------------|---------------------------------------------------------------------------|
| `editions`    | what each cell of a chapter is; the student and autograder editions       |
| `score`       | one submission: take its answers, run them, score each exercise           |
| `sandbox`     | the process a submission runs in: own folder, offline, time limits        |
| `report`      | grades.csv and Gradescope's results.json                                  |
| `__main__`    | the command line                                                          |

The exercises' checks themselves are `ddlearn.checks` (public and hidden cases, honest calls).
"""
