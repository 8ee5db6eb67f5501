"""Chapter 04, exercise 2: logit-normal timesteps.

`logit_normal_timesteps(batch_size, num_train_timesteps, generator)` returns t = round(sigmoid(n)
(T-1)) with n ~ N(0, 1) drawn from the generator given: a (B,) int64 tensor in [0, T-1]. It may
not call `losses.sample_timesteps` or `flow_sigmas`. The check wants the same t from the same
seed whatever torch's global generator does, other t from another seed, and, for a small T, the
exact frequencies of each t, which tell rounding from truncating and a normal n from a uniform
one. Hidden cases: other batch sizes, T and seeds.
"""

import math

import torch

from ddlearn import losses
from ddlearn.checks import ExerciseError, guard, run_check


def reference_logit_normal_timesteps(batch_size, num_train_timesteps, generator):
    """The answer the cells below use while yours is not solved: t = round(sigmoid(n) (T-1))."""
    n = torch.randn(batch_size, generator=generator)               # n ~ N(0, 1)
    return (torch.sigmoid(n) * (num_train_timesteps - 1)).round().long()


def frequencies(cdf, edges):
    """P(u in each bin [edges[k], edges[k+1])) for u in (0, 1) with the given CDF."""
    bins = zip(edges[:-1], edges[1:], strict=True)
    return torch.tensor([cdf(b) - cdf(a) for a, b in bins], dtype=torch.double)


def logit_normal_cdf(u):
    """P(sigmoid(n) < u) = Φ(logit(u)) for n ~ N(0, 1)."""
    return 0.0 if u <= 0 else 1.0 if u >= 1 else \
        0.5 * (1 + math.erf(math.log(u / (1 - u)) / math.sqrt(2)))


def check_logit_normal_timesteps(fn, hidden=False):
    """fn(batch_size, num_train_timesteps, generator) -> t (B,) int64 in [0, T-1], logit-normal.

    Hidden cases: other batch sizes, T and seeds."""
    explain = lambda error: ("pass the generator by keyword: torch.randn(batch_size, "
                             "generator=generator)." if isinstance(error, TypeError) else None)
    yours = guard("logit_normal", fn, losses.sample_timesteps, losses.flow_sigmas,
                  reference_logit_normal_timesteps, explain=explain)

    def draw(batch_size, T, seed):
        t = yours(batch_size, T, torch.Generator().manual_seed(seed))
        if not torch.is_tensor(t):
            raise ExerciseError(f"logit_normal: return a tensor, got {type(t).__name__}")
        if t.shape != (batch_size,):
            raise ExerciseError(f"logit_normal: shape {tuple(t.shape)}, expected "
                                f"({batch_size},): one timestep per image.")
        if t.dtype != torch.long:
            raise ExerciseError(f"logit_normal: dtype {t.dtype}; timesteps index "
                                "alphas_cumprod, so round and convert: `.round().long()`.")
        if t.min() < 0 or t.max() > T - 1:
            raise ExerciseError(f"logit_normal: values from {t.min()} to {t.max()}, but "
                                f"t must lie in 0..{T - 1}. Squash n ~ N(0, 1) into (0, 1) "
                                f"with torch.sigmoid, then scale by (T - 1), not T.")
        return t

    def reproducible(batch_size, T, seed):
        with torch.random.fork_rng(devices=[]):  # torch's global generator, changed in between
            torch.manual_seed(seed + 1)
            first = draw(batch_size, T, seed)
            torch.manual_seed(seed + 2)
            again, other = draw(batch_size, T, seed), draw(batch_size, T, seed + 1)
        if not torch.equal(first, again):
            raise ExerciseError("logit_normal: the same seeded generator gave other t on a second "
                                "call: draw from the `generator` you are given, "
                                "torch.randn(batch_size, generator=generator), not torch's global "
                                "one, so that a training run can be repeated.")
        if torch.equal(first, other):
            raise ExerciseError("logit_normal: generators with different seeds gave the same t: "
                                "draw from the `generator` you are given (do not seed your own).")

    def distributed(T, seed, n=20_000):
        """Exact frequencies of each t (small T), which rounding and truncating tell apart."""
        counts = torch.bincount(draw(n, T, seed), minlength=T).double() / n
        rounding = [0.0] + [(k + 0.5) / (T - 1) for k in range(T - 1)] + [1.0]
        expected = frequencies(logit_normal_cdf, rounding)
        uniform = "they look uniform: draw n = torch.randn(batch_size, generator=generator), " \
                  "not torch.rand"
        mistakes = {
            "you truncated: .long() alone rounds down, so t = T-1 hardly ever comes up; "
            "round first: (torch.sigmoid(n) * (T - 1)).round().long()":
                frequencies(logit_normal_cdf, [k / (T - 1) for k in range(T)] + [1.0]),
            uniform: frequencies(lambda u: min(max(u, 0.0), 1.0), rounding),
            uniform + " (nor torch.randint)": torch.full((T,), 1 / T, dtype=torch.double),
        }
        if (counts - expected).abs().max() < 0.02:  # 0.02: > 5 standard errors of a frequency
            return
        for hint, wrong in mistakes.items():
            if (counts - wrong).abs().max() < 0.02:
                raise ExerciseError(f"logit_normal: with T = {T}, {hint}.")
        show = lambda p: ", ".join(f"{v:.3f}" for v in p.tolist())
        raise ExerciseError(f"logit_normal: with T = {T}, your t = 0..{T - 1} come up with "
                            f"frequencies {show(counts)}; round(sigmoid(n) (T-1)) gives "
                            f"{show(expected)}. t = (torch.sigmoid(n) * (T - 1)).round().long(), "
                            f"n = torch.randn(batch_size, generator=generator).")

    def hidden_cases(rng):
        b, T, seed = rng.randint(4, 40), rng.choice((20, 200, 2000)), rng.randrange(10_000)
        small_T, other_seed = rng.choice((4, 6, 8)), rng.randrange(10_000)
        return [lambda: reproducible(b, T, seed), lambda: distributed(small_T, other_seed)]

    return run_check("logit_normal", fn,
                     lambda: reproducible(8, 1000, seed=0),
                     lambda: reproducible(64, 50, seed=3),
                     lambda: distributed(5, seed=1),
                     hidden=hidden, hidden_cases=hidden_cases,
                     reference=reference_logit_normal_timesteps)
