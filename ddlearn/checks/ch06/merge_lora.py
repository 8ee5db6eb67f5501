"""Chapter 06, exercise 3: merging a LoRA into the weight it adapts (what `fuse_lora` does).

`merge_lora(weight, lora_A, lora_B, lora_alpha, r, scale=1.0)` returns W' = W₀ + s·(α/r)·B A, a
new (out, in) matrix, so that W' x equals the LoRA layer's output (Hu et al. 2021, Sec. 4.1: no
extra latency at inference). The input `weight` must stay unchanged (unfuse needs W₀ back). It may
not call ddlearn's `LoRALinear.merge`. Hidden cases: other ranks, α, scales, shapes, float64.
"""

import torch

from ddlearn import lora
from ddlearn.checks import (
    ExerciseError,
    check_dtype,
    compare_with_mistakes,
    guard,
    randn,
    run_check,
)


def reference_merge_lora(weight, lora_A, lora_B, lora_alpha, r, scale=1.0):
    """The answer the cells below use while yours is not solved: W₀ + s·(α/r)·B A."""
    return weight + scale * (lora_alpha / r) * (lora_B @ lora_A)  # (out, r) @ (r, in)


def explain(error):
    if "mat1 and mat2" in str(error) or "size of tensor" in str(error):
        return "B is (out, r) and A is (r, in): B @ A is (out, in), the shape of W₀."
    return None


def check_merge_lora(fn, hidden=False):
    """fn(weight, lora_A, lora_B, lora_alpha, r, scale=1.0) -> W₀ + s·(α/r)·B A (a new tensor).

    Hidden cases: other ranks, α, scales, shapes and float64."""
    yours = guard("merge_lora", fn, lora.LoRALinear.merge, reference_merge_lora, explain=explain)

    def case(d_in, d_out, r, alpha, scale, seed, dtype=torch.float32):
        weight = randn(d_out, d_in, seed=seed).to(dtype)
        A, B = randn(r, d_in, seed=seed + 1).to(dtype), randn(d_out, r, seed=seed + 2).to(dtype)
        expected = reference_merge_lora(weight, A, B, alpha, r, scale)
        mistakes = {
            "the update is not scaled by α/r: W' = W₀ + s·(α/r)·B A.": weight + scale * (B @ A),
            "the factor is α/r (lora_alpha divided by the rank), not r/α.":
                weight + scale * (r / alpha) * (B @ A),
            "W₀ is missing: the merged weight is W₀ plus the update.": scale * alpha / r * (B @ A),
            "the scale s multiplies the update: W₀ + s·(α/r)·B A.": weight + alpha / r * (B @ A),
        }
        mistakes = {m: w for m, w in mistakes.items() if not torch.allclose(w, expected)}
        given = weight.clone()
        merged = yours(given, A.clone(), B.clone(), alpha, r, scale)
        check_dtype("merge_lora", merged, dtype)
        compare_with_mistakes("merge_lora", merged, expected, mistakes,
                              "W' = weight + scale * (lora_alpha / r) * (lora_B @ lora_A)")
        if not torch.equal(given, weight):
            raise ExerciseError("merge_lora: the value is right, but you changed `weight` in "
                                "place; return a new tensor (unfuse needs W₀ back): "
                                "weight + ..., not weight += ...")
        x = randn(3, d_in, seed=seed + 3).to(dtype)  # W'x is the LoRA layer's output
        layer_out = x @ weight.T + scale * alpha / r * (x @ A.T @ B.T)
        if not torch.allclose(x @ merged.T, layer_out, rtol=1e-4, atol=1e-5):
            raise ExerciseError("merge_lora: W' x differs from the LoRA layer's output.")

    def hidden_cases(rng):
        def draw(dtype):
            r, d_in, d_out = rng.choice((1, 3, 8)), rng.choice((4, 16)), rng.choice((6, 10))
            alpha, scale = rng.choice((1, 8, 2.5)), rng.choice((1.0, 0.3, -1.0))
            seed = rng.randrange(10_000)
            return lambda: case(d_in, d_out, r, alpha, scale, seed, dtype)
        return [draw(torch.float32), draw(torch.float64)]

    return run_check("merge_lora", fn,
                     lambda: case(8, 5, r=4, alpha=8, scale=1.0, seed=0),
                     lambda: case(16, 16, r=2, alpha=1, scale=0.5, seed=7),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_merge_lora)
