"""Chapter 04, exercise 4: the EMA update.

`ema_update(ema_params, params, decay)` moves every EMA tensor in place, θ_ema ← d θ_ema +
(1-d) θ (e.g. `ema_p.lerp_(p, 1 - decay)`); it may not call `ddlearn.training.EMA.update`. The
check fails when the EMA tensors did not change (new tensors returned, `e = ...` only renaming)
and names the usual mistakes (the weights swapped, the new weights copied). Hidden cases: more
tensors, other shapes, decays and float64.
"""

import torch

from ddlearn.checks import ExerciseError, compare_with_mistakes, guard, randn, run_check
from ddlearn.training import EMA


def reference_ema_update(ema_params, params, decay):
    """The answer the cells below use while yours is not solved: θ_ema ← d θ_ema + (1-d) θ."""
    for ema_p, p in zip(ema_params, params, strict=True):
        ema_p.lerp_(p, 1 - decay)                   # = decay * ema_p + (1 - decay) * p


def check_ema_update(fn, hidden=False):
    """fn(ema_params, params, decay) updates each tensor of ema_params in place.

    Hidden cases: more tensors, other shapes, decays and float64."""
    in_place = "`e.mul_(decay).add_(p, alpha=1 - decay)` or `e.lerp_(p, 1 - decay)`"
    explain = lambda error: (f"ema_params and params are lists of tensors: loop over "
                             f"zip(ema_params, params) and update each, {in_place}."
                             if "list" in str(error) else None)
    yours = guard("ema_update", fn, EMA.update, reference_ema_update, explain=explain)

    def case(decay, seed, shapes=((4, 3), (5,)), dtype=torch.float32):
        params = [randn(*shape, seed=seed + i).to(dtype) for i, shape in enumerate(shapes)]
        ema = [randn(*shape, seed=seed + 50 + i).to(dtype) for i, shape in enumerate(shapes)]
        before = [e.clone() for e in ema]
        with torch.no_grad():
            returned = yours(ema, [p.clone() for p in params], decay)
        if all(torch.equal(e, b) for e, b in zip(ema, before, strict=True)):
            extra = (f" You returned new tensors: update the ones you were given, e.g. {in_place}."
                     if returned is not None else f" (`e = ...` only renames; {in_place} changes "
                     f"the tensor itself.)")
            raise ExerciseError(f"ema_update: the EMA tensors did not change.{extra}")
        for i, (e, b, p) in enumerate(zip(ema, before, params, strict=True)):
            mistakes = {"the weights are swapped: keep `decay` of the *EMA* and mix in only "
                        "(1 - decay) of the new weights.": decay * p + (1 - decay) * b,
                        "you copied the new weights; the EMA moves only (1 - decay) of the way "
                        "towards them.": p}
            compare_with_mistakes(f"ema_update[{i}]", e, decay * b + (1 - decay) * p, mistakes,
                      "θ_ema ← decay·θ_ema + (1 - decay)·θ, in place, for every tensor.")

    def hidden_cases(rng):
        def draw(dtype):
            shapes = [tuple(rng.randint(1, 6) for _ in range(rng.randint(1, 4)))
                      for _ in range(rng.randint(3, 5))]
            decay = rng.choice((0.5, 0.95, 0.9999, round(rng.uniform(0.8, 0.99), 3)))
            seed = rng.randrange(10_000)
            return lambda: case(decay, seed, shapes, dtype)
        return [draw(torch.float32), draw(torch.float64)]

    return run_check("ema_update", fn, lambda: case(0.9, seed=0), lambda: case(0.999, seed=5),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_ema_update)
