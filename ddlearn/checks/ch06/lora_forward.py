"""Chapter 06, exercise 1: the LoRA forward pass.

`lora_forward(x, weight, bias, lora_A, lora_B, lora_alpha, r, scale=1.0)` returns
h = W₀ x + b + s · (α/r) · B A x (Hu et al. 2021, eq. 3) for x of shape (..., in), W₀ (out, in),
A (r, in), B (out, r), and `bias` a (out,) tensor or None. It may not call ddlearn's `LoRALinear`.
The check names the usual mistakes (no α/r, r/α, the base output left out, the scale missed)
and wants the inputs' dtype kept. Hidden cases: other ranks, α, batch shapes, no bias, float64.
"""

import torch

from ddlearn import lora
from ddlearn.checks import check_dtype, compare_with_mistakes, guard, randn, run_check


def reference_lora_forward(x, weight, bias, lora_A, lora_B, lora_alpha, r, scale=1.0):
    """The answer the cells below use while yours is not solved: W₀x + b + s(α/r)·B A x."""
    base = x @ weight.T + (bias if bias is not None else 0)  # (..., in) -> (..., out)
    update = (x @ lora_A.T) @ lora_B.T  # (..., in) -> (..., r) -> (..., out)
    return base + scale * (lora_alpha / r) * update


def explain(error):
    if "mat1 and mat2" in str(error) or "size of tensor" in str(error):
        return ("Shapes: x (..., in), W₀ (out, in), A (r, in), B (out, r): x @ A.T is (..., r), "
                "then @ B.T is (..., out).")
    return None


def check_lora_forward(fn, hidden=False):
    """fn(x, weight, bias, lora_A, lora_B, lora_alpha, r, scale=1.0) -> W₀x + b + s(α/r)·BAx.

    Hidden cases: other ranks, α, batch shapes, no bias and float64."""
    yours = guard("lora_forward", fn, lora.LoRALinear.forward, reference_lora_forward,
                  explain=explain)

    def case(shape, d_in, d_out, r, alpha, scale, seed, with_bias=True, dtype=torch.float32):
        x = randn(*shape, d_in, seed=seed).to(dtype)
        weight = randn(d_out, d_in, seed=seed + 1).to(dtype)
        bias = randn(d_out, seed=seed + 2).to(dtype) if with_bias else None
        A, B = randn(r, d_in, seed=seed + 3).to(dtype), randn(d_out, r, seed=seed + 4).to(dtype)
        expected = reference_lora_forward(x, weight, bias, A, B, alpha, r, scale)
        base = x @ weight.T + (bias if bias is not None else 0)
        update = x @ A.T @ B.T
        mistakes = {
            "the update is not scaled by α/r: h = W₀x + b + s·(α/r)·BAx.": base + scale * update,
            "the factor is α/r (lora_alpha divided by the rank), not r/α.":
                base + scale * (r / alpha) * update,
            "the base layer's output W₀x + b is missing: LoRA adds to it.":
                scale * (alpha / r) * update,
            "the scale s multiplies the LoRA update too: s·(α/r)·BAx.": base + alpha / r * update,
        }
        mistakes = {m: w for m, w in mistakes.items() if not torch.allclose(w, expected)}
        out = yours(x.clone(), weight.clone(), None if bias is None else bias.clone(), A.clone(),
                    B.clone(), alpha, r, scale)
        check_dtype("lora_forward", out, dtype)
        compare_with_mistakes("lora_forward", out, expected, mistakes,
                              "h = x @ W.T + b + scale * (lora_alpha / r) * (x @ A.T) @ B.T")

    def hidden_cases(rng):
        def draw(dtype):
            r, d_in, d_out = rng.choice((1, 2, 8)), rng.choice((5, 16)), rng.choice((3, 12))
            shape = rng.choice(((4,), (2, 7), (1, 3, 5)))
            alpha, scale = rng.choice((1, 4, 16, 3.5)), rng.choice((1.0, 0.5, 0.0, 2.0))
            seed, with_bias = rng.randrange(10_000), rng.random() < 0.5
            return lambda: case(shape, d_in, d_out, r, alpha, scale, seed, with_bias, dtype)
        return [draw(torch.float32), draw(torch.float64), draw(torch.float32)]

    return run_check("lora_forward", fn,
                     lambda: case((6,), 8, 5, r=4, alpha=8, scale=1.0, seed=0),
                     lambda: case((2, 3), 16, 16, r=2, alpha=2, scale=0.5, seed=5, with_bias=False),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_lora_forward)
