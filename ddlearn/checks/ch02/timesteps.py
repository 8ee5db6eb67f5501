"""Chapter 02, exercise 2: which timesteps a sampler visits.

`timesteps(num_inference_steps, num_train_timesteps, spacing)` returns the descending integer
timesteps of the "leading", "trailing" and "linspace" spacings (Lin et al. 2023, Table 2), checked
against `spaced_timesteps`. It may not call that or any scheduler's `set_timesteps`; the check
names each usual wrong recipe (trailing ending at T, floor or ceil for round, the step rounded
first, T // n, ascending order, floats). Hidden cases: other step counts and num_train_timesteps,
each with the three spacings, chosen so that no value is exactly k + 1/2.
"""

from fractions import Fraction

import numpy as np
import torch

from ddlearn.checks import ExerciseError, as_tensor, compare_with_mistakes, guard, run_check
from ddlearn.checks.ch02.common import SCHEDULERS
from ddlearn.schedulers.schedules import spaced_timesteps

SPACINGS = ("leading", "trailing", "linspace")


def reference_timesteps(num_inference_steps, num_train_timesteps, spacing):
    """Lin et al. 2023, Table 2, descending: what `set_timesteps` visits for each spacing."""
    n, T = num_inference_steps, num_train_timesteps
    if spacing == "leading":
        steps = np.arange(0, n) * (T // n)
    elif spacing == "trailing":
        steps = np.round(np.arange(T, 0, -T / n)) - 1
    else:  # "linspace"
        steps = np.round(np.linspace(0, T - 1, n))
    return np.sort(steps)[::-1].astype(np.int64)  # descending: from noise to image


def _distinct(mistakes: dict) -> dict:
    """Mistakes that give the same numbers share one message, true of each of them."""
    groups = {}  # the numbers -> (the wrong tensor, the messages of the mistakes that give it)
    for message, wrong in mistakes.items():
        groups.setdefault(tuple(wrong.tolist()), (wrong, []))[1].append(message)
    merged = {}
    for wrong, messages in groups.values():
        merged[messages[0] if len(messages) == 1 else
               "your numbers fit more than one mistake: " + " OR ".join(messages)] = wrong
    return merged


def _timestep_mistakes(n: int, T: int, spacing: str) -> dict:
    """The usual wrong recipes for one spacing, as descending int64 tensors."""
    down = np.arange(T, 0, -T / n)  # T, T - T/n, ..., T/n: the trailing values before rounding
    tensor = lambda steps: torch.from_numpy(np.asarray(steps)[:n].astype(np.int64))
    return _distinct({
        "trailing": {
            "'trailing' ends at T-1 = the last training step, not at T: subtract 1.":
                tensor(np.round(down)),
            "round the 'trailing' values to the nearest integer (np.round); you rounded them "
            "down (np.floor, int() and astype(int) all round down).": tensor(np.floor(down) - 1),
            "round the 'trailing' values to the nearest integer (np.round), not up (np.ceil).":
                tensor(np.ceil(down) - 1),
            "you rounded the step size T / n first (round(T / n)): count down from T in steps "
            "of exactly T / n and round the timesteps afterwards.":
                tensor(np.arange(T, 0, -round(T / n)) - 1),
            "you stepped by the whole number T // n (the 'leading' stride): 'trailing' counts "
            "down from T in steps of exactly T / n and rounds afterwards.":
                tensor(np.arange(T, 0, -(T // n)) - 1),
        },
        "leading": {
            "'leading' starts at 0 and goes up in steps of T // n (then reverse it); you "
            "started from T-1.": tensor(np.arange(T - 1, -1, -(T // n))),
            "'leading' steps by the whole number T // n (floor division); you stepped by T / n "
            "and rounded.": tensor(np.round(np.arange(n) * T / n)[::-1]),
        },
        "linspace": {
            "'linspace' spans 0..T-1 (both ends included): np.linspace(0, T - 1, n).":
                tensor(np.linspace(0, T, n).round()[::-1]),
            "round the linspace values (np.round), don't truncate them with astype(int).":
                tensor(np.linspace(0, T - 1, n)[::-1]),
        },
    }[spacing])


def _clear_cut(n: int, T: int) -> bool:
    """No trailing or linspace value is exactly k + 1/2 (float noise would round it), and
    np.arange(T, 0, -T / n) has n values (float noise can add one past the end)."""
    values = [Fraction(k * T, n) for k in range(n)] + [Fraction(k * (T - 1), n - 1)
                                                       for k in range(n)]
    return len(np.arange(T, 0, -T / n)) == n and all(v.denominator != 2 for v in values)


def check_timesteps(fn, hidden=False):
    """fn(num_inference_steps, num_train_timesteps, spacing) -> descending integer timesteps.

    Hidden: other step counts and num_train_timesteps, each with the three spacings."""
    explain = lambda error: ("range() takes whole numbers only: np.arange accepts a float step "
                             "(T / n)." if "interpreted as an integer" in str(error) else None)
    yours = guard("timesteps", fn, reference_timesteps, spaced_timesteps,
                  *[cls.set_timesteps for cls in SCHEDULERS], explain=explain)

    def case(n, T, spacing):
        expected = torch.from_numpy(spaced_timesteps(n, T, spacing))
        name = f"timesteps({n}, {T}, {spacing!r})"
        result = yours(n, T, spacing)
        if result is None:
            raise ExerciseError(f"{name}: your function returned None — did you forget `return`?")
        result = as_tensor(result)
        if result.ndim != 1 or len(result) != n:
            extra = (" np.arange(T, 0, -T / n) gives exactly n values; a rounded step gives more "
                     "or fewer." if spacing == "trailing" else "")
            raise ExerciseError(f"{name}: expected {n} timesteps in a 1-D array, got shape "
                                f"{tuple(result.shape)}.{extra}")
        if len(result) > 1 and torch.equal(result.double(), expected.flip(0).double()):
            raise ExerciseError(f"{name}: right values, wrong order: sampling goes from noise "
                                f"to image, so the timesteps must be descending (`[::-1]`).")
        if result.is_floating_point() and not torch.equal(result, result.round()):
            raise ExerciseError(f"{name}: {result[:3].tolist()}... are not whole numbers; the "
                                f"UNet was trained on integer t: round them (np.round).")
        compare_with_mistakes(name, result, expected, _timestep_mistakes(n, T, spacing),
                              f"'{spacing}' in Lin et al. 2023, Table 2; compare yours with "
                              f"{expected[:4].tolist()}...")

    def hidden_cases(rng):
        def draw():
            T = rng.choice((1000, 500, 250, 100))
            n = rng.choice([n for n in range(2, 60) if _clear_cut(n, T)])
            return lambda: [case(n, T, spacing) for spacing in SPACINGS]

        return [draw() for _ in range(3)]

    # (6, 1000) first: there each wrong 'trailing' recipe gives numbers of its own
    cases = [(n, T, spacing) for n, T in ((10, 1000), (6, 1000), (7, 1000), (3, 50))
             for spacing in SPACINGS]
    return run_check("timesteps", fn, *[lambda c=c: case(*c) for c in cases],
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_timesteps)
