"""Shared test helper: one architecture in ddlearn and in diffusers (or transformers), the same
random weights, the same input, the same output.

Default initialisations leave norm gains at 1, biases at 0 and some output layers at 0, so a wrongly
wired norm or a swapped key could hide behind them: `randomise` gives every parameter random values
first. Typical use:

    from model_harness import assert_close, assert_round_trip, randomise  # tests/ is on sys.path
    reference = randomise(diffusers.UNet2DModel(**config), seed=1)
    forward = lambda model: model(x, 10).sample
    assert_round_trip(reference, UNet2DModel(**config), forward)                # state dicts
    assert_round_trip(reference, UNet2DModel, forward, folder=tmp_path)         # checkpoints

`assert_close` compares with a tolerance relative to the output's scale (max |expected|), as the
tensors a model returns have no natural absolute unit.
"""

import copy
import warnings
from pathlib import Path
from typing import Optional

import torch

NORMS = (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm)


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random, drawn from one seeded generator; returns the model in eval mode.

    Norm gains ~ 1 ± 0.2 (still gains), other 1-D parameters (biases, norm shifts) ~ ± 0.2, and
    weights of std 1/sqrt(fan_in), so that activations keep their scale through a deep network.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=g)
                if p.ndim == 1:
                    gain = isinstance(module, NORMS) and name == "weight"
                    p.copy_(0.2 * noise + (1.0 if gain else 0.0))
                else:
                    p.copy_(noise / p[0].numel() ** 0.5)
    return model.eval()


def assert_close(actual, expected, rtol: float = 1e-4, atol: float = 0.0, what: str = "output"):
    """max |actual - expected| <= atol + rtol * max |expected|, same shape and dtype, all finite.

    A NaN or inf fails on either side: the same NaN in both libraries is a shared bug, not an
    agreement (and it would make the scale, hence the tolerance, NaN or infinite).
    """
    actual, expected = torch.as_tensor(actual).detach(), torch.as_tensor(expected).detach()
    assert actual.shape == expected.shape, \
        f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, \
        f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    actual, expected = actual.cpu().double(), expected.cpu().double()
    for side, x in (("actual", actual), ("expected", expected)):
        bad = (~torch.isfinite(x)).sum().item()
        assert bad == 0, f"{what}: {side} has {bad} NaN/inf value(s) of {x.numel()}"
    if expected.numel() == 0:
        return
    err, scale = (actual - expected).abs().max().item(), expected.abs().max().item()
    assert err <= atol + rtol * scale, (f"{what}: max |actual - expected| = {err:.3g} exceeds "
                                        f"{atol:.3g} + {rtol:.3g} x output scale {scale:.3g}")


def save_and_load(model: torch.nn.Module, cls, folder) -> torch.nn.Module:
    """model.save_pretrained(folder), then cls.from_pretrained(folder) in eval mode.

    Any warning while loading fails the test: a checkpoint the other library wrote must load
    silently (every key it writes is known, or known to be harmless).
    """
    model.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return cls.from_pretrained(folder).eval()


def assert_same_keys(model: torch.nn.Module, reference: torch.nn.Module):
    """The two state dicts name the same tensors with the same shapes (a strict load either way)."""
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    missing, unexpected = sorted(theirs.keys() - ours.keys()), sorted(ours.keys() - theirs.keys())
    shapes = [f"{k}: {ours[k]} vs {theirs[k]}" for k in sorted(ours.keys() & theirs.keys())
              if ours[k] != theirs[k]]
    assert not (missing or unexpected or shapes), \
        f"missing keys {missing}, unexpected keys {unexpected}, shape mismatches {shapes}"


def outputs_of(forward, model) -> tuple:
    """forward(model) without gradients, as a tuple of tensors (an output stands for .sample)."""
    with torch.no_grad():
        out = forward(model)
    out = out if isinstance(out, (tuple, list)) and not hasattr(out, "sample") else (out,)
    return tuple(getattr(o, "sample", o) for o in out)


def assert_same_outputs(forward, model, expected: tuple, rtol: float, atol: float, hop: str):
    """`outputs_of(forward, model)` against `expected`, output by output; returns the outputs."""
    actual = outputs_of(forward, model)
    assert len(actual) == len(expected), f"{hop}: {len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert_close(a, e, rtol, atol, what=f"{hop}, output {i}")
    return actual


def assert_round_trip(reference: torch.nn.Module, ours, forward, folder: Optional[Path] = None,
                      rtol: float = 1e-4, atol: float = 0.0) -> tuple:
    """Reference weights -> ddlearn -> reference class again, the same outputs at each hop.

    `reference` is a diffusers/transformers model with random weights; `forward(model)` runs the
    same input through a model of either library and returns a tensor, an output with `.sample`,
    or a tuple of those. In memory (`folder=None`), `ours` is a ddlearn model:

    1. reference's state dict loads into ours (strict); ours gives reference's outputs;
    2. ours' state dict loads (strict) into a copy of reference whose weights were randomised
       afresh; it gives ours' outputs.

    Through checkpoints (`folder` given), `ours` is the ddlearn class and the hops are
    `save_and_load`: config.json and key names as each library writes them (they may differ in
    memory: transformers 5's CLIPTextModel has no `text_model.` prefix, ddlearn's keeps SD's).
    ddlearn refuses missing or unexpected keys, and a weight left out on either side keeps its
    fresh initialisation, which changes the output. Returns (ddlearn model, reference's copy).
    """
    expected = outputs_of(forward, reference)
    if folder is None:
        ours.load_state_dict(reference.state_dict(), strict=True)
        ours.eval()
    else:
        ours = save_and_load(reference, ours, Path(folder) / "reference")
    ours_out = assert_same_outputs(forward, ours, expected, rtol, atol, "reference -> ddlearn")
    if folder is None:
        back = randomise(copy.deepcopy(reference), seed=12345)  # other weights until loaded
        back.load_state_dict(ours.state_dict(), strict=True)
    else:
        back = save_and_load(ours, type(reference), Path(folder) / "ddlearn")
    assert_same_outputs(forward, back, ours_out, rtol, atol, "ddlearn -> reference")
    return ours, back
