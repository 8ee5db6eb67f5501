"""How a check runs a learner's function: honest calls, public and hidden cases, what comes next.

Every `check_*` in `ddlearn.checks.chNN` is built from two pieces here:

- `guard(name, fn, *forbidden)` wraps the learner's function. While it runs, a profiler watches for
  calls into ddlearn's own implementation of the same exercise (`forbidden`): an answer that only
  calls `target_for` to compute v has not written v, and fails. An error raised inside the
  learner's code becomes an `ExerciseError` that says which inputs it was called with.
- `run_check(name, fn, cases, ...)` runs the cases. With `hidden=True` it runs other ones, drawn
  from a seed (`DDLEARN_HIDDEN_SEED`): other seeds, shapes, dtypes and configs, so an answer that
  hard-codes the public cases fails. It prints one line and returns the function the notebook
  should use from here on: yours when it passes.

When an answer fails, the check raises `ExerciseError`, except in **keep-going** mode (the student
edition turns it on, and so does the grader): then it prints what is wrong and hands back the
reference answer, so that one unsolved exercise never blocks the cells after it. Under the grader
(`DDLEARN_GRADING_RESULTS` names a file) each check also appends its result there, one JSON line.
"""

import inspect
import json
import os
import random
import sys

import torch

#: the student edition sets this to True (see `keep_going`); the grader's environment implies it
KEEP_GOING = False
#: the exercise whose check cell is running, set by the grader around each check cell
EXERCISE = None


class ExerciseError(AssertionError):
    """A learner's answer is not right yet; the message says how and hints at why."""


def keep_going(on: bool = True):
    """Student edition: a failing check prints its hint and returns the reference answer."""
    global KEEP_GOING
    KEEP_GOING = on


def describe(value) -> str:
    """A short description of an argument: a tensor's shape and dtype, a model's class."""
    if torch.is_tensor(value):
        return f"tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, (int, float, str, bool)) or value is None:
        return repr(value)
    return type(value).__name__


def guard(name: str, fn, *forbidden, explain=None):
    """`fn`, wrapped: it fails if it calls any of `forbidden` or raises.

    `forbidden`: ddlearn functions or methods that implement this exercise. `explain(error)` may
    turn a raw error of the learner's code into a hint (or return None for the generic message)."""
    codes = {}
    for target in forbidden:
        function = inspect.unwrap(getattr(target, "__func__", target))
        codes[function.__code__] = getattr(target, "__qualname__", str(target))

    def guarded(*args, **kwargs):
        called = []

        def watch(frame, event, arg):
            if event == "call" and frame.f_code in codes:
                called.append(codes[frame.f_code])

        previous = sys.getprofile()
        sys.setprofile(watch)
        try:
            result = fn(*args, **kwargs)
        except (ExerciseError, NotImplementedError):
            raise
        except Exception as error:
            hint = explain(error) if explain else None
            inputs = ", ".join([describe(a) for a in args]
                               + [f"{k}={describe(v)}" for k, v in kwargs.items()])
            raise ExerciseError(f"{name}: your code raised {type(error).__name__}: {error} "
                                f"(called with {inputs}). {hint or ''}".rstrip()) from error
        finally:
            sys.setprofile(previous)
        if called:
            raise ExerciseError(f"{name}: your function calls ddlearn's own `{called[0]}`, which "
                                f"is the answer to this exercise. Write the computation "
                                f"yourself, from the equation above the exercise.")
        return result

    return guarded


def hidden_rng(name: str, hidden) -> random.Random:
    """The generator hidden cases are drawn from: `hidden` itself if an int, else the env seed."""
    seed = hidden if isinstance(hidden, int) and not isinstance(hidden, bool) else \
        int(os.environ.get("DDLEARN_HIDDEN_SEED", "0"))
    return random.Random(f"{name}:{seed}")


def run_check(name: str, fn, *cases, hidden=False, hidden_cases=None, reference=None):
    """Run `cases` (zero-argument functions that raise ExerciseError) and report one line.

    With `hidden`, run `hidden_cases(rng)` instead. Returns `fn` when every case passes; when one
    fails, raises ExerciseError, or in keep-going mode returns `reference` (see the module)."""
    if hidden:
        cases = hidden_cases(hidden_rng(name, hidden))
    kind = "hidden" if hidden else "public"
    try:
        for case in cases:
            case()
    except KeyboardInterrupt:
        if not os.environ.get("DDLEARN_GRADING_RESULTS"):
            raise
        message = f"{name}: interrupted at the grader's time limit (an infinite loop?)"
    except NotImplementedError:
        message = (f"{name}: not implemented yet — replace the `raise NotImplementedError` with "
                   f"your code")
    except ExerciseError as error:
        message = str(error)
    else:
        _record(name, kind, True, "")
        print(f"✅ {name}: matches the reference on {len(cases)} {kind} test case(s)")
        return fn
    _record(name, kind, False, message)
    if not (KEEP_GOING or os.environ.get("DDLEARN_GRADING_RESULTS")) or reference is None:
        raise ExerciseError(message) from None
    print(f"❌ {message}\n   The cells below use ddlearn's reference answer instead, so the "
          f"notebook keeps running. Fix yours and run this cell again.", file=sys.stderr)
    return reference


def _record(check: str, kind: str, passed: bool, message: str):
    """Under the grader, append this check's result to its results file."""
    path = os.environ.get("DDLEARN_GRADING_RESULTS")
    if path and EXERCISE is not None:
        line = {"exercise": EXERCISE, "check": check, "kind": kind, "passed": passed,
                "message": message}
        with open(path, "a", encoding="utf-8") as results:
            results.write(json.dumps(line, ensure_ascii=False) + "\n")
