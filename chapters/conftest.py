"""No chapter cell may show a warning or a junk output line (checked while nbval runs the cells).

`pytest --nbval-lax chapters/` executes every cell once and keeps what it showed in
`item.test_outputs`. After each cell this hook fails it, naming the output, if

- anything went to stderr: a warning, a logged message, a tqdm bar drawn as text (in a notebook
  with ipywidgets, tqdm.auto draws a widget instead), or
- a text/plain result is a bare object repr, `<function f(x)>` or `<... at 0x7f...>`:
  what a learner sees when a cell's last line returns something that has no picture.

tests/test_notebook_outputs.py proves the hook can fail, on tests/fixtures/junk_outputs.ipynb.
"""

import re

import pytest

JUNK_REPR = re.compile(r"<function |<bound method |<[\w.]+[^\n]* at 0x[0-9a-fA-F]+>")


def output_problems(outputs) -> list:
    """One line per output a learner should not see: stderr text, or a bare object repr."""
    problems = []
    for output in outputs:
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            problems.append(f"wrote to stderr: {output['text'].strip()[:400]}")
        text = output.get("data", {}).get("text/plain", "")
        text = "".join(text) if isinstance(text, list) else text
        if JUNK_REPR.search(text):
            problems.append(f"shows a bare object repr: {text.strip()[:200]}")
    return problems


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield  # the cell ran without an error (nbval raises otherwise)
    problems = output_problems(getattr(item, "test_outputs", None) or [])
    if problems:
        item.raise_cell_error("the cell shows a warning or a junk output line",
                              "\n".join(problems))
    return result
