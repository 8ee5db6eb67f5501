"""Chapter 01's exercise checkers: the reference answer passes, typical wrong answers fail with the
hint that names the mistake, and an untouched stub says "not implemented"."""

import re

import numpy as np
import pytest
import torch

from ddlearn.checks import ExerciseError, ch01
from ddlearn.pipelines.ddpm import DDIMPipeline
from ddlearn.schedulers.ddim import DDIMScheduler


# --------------------------------------------------------------------------------------------------
# Reference answers (what the notebook's solution cells contain)
# --------------------------------------------------------------------------------------------------
def postprocess(images):
    images = (images / 2 + 0.5).clamp(0, 1)  # [-1, 1] -> [0, 1]
    images = images.permute(0, 2, 3, 1).numpy()  # (B, C, H, W) -> (B, H, W, C)
    return (images * 255).round().astype(np.uint8)


def seeded_noise(seeds, shape):
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(s))
                      for s in seeds])


def params_per_block(unet):
    counts = {}
    for name, child in unet.named_children():
        if isinstance(child, torch.nn.ModuleList):
            for i, block in enumerate(child):
                counts[f"{name}.{i}"] = sum(p.numel() for p in block.parameters())
        else:
            counts[name] = sum(p.numel() for p in child.parameters())
    return counts


def stub(*args):
    raise NotImplementedError  # your code here


# --------------------------------------------------------------------------------------------------
# Typical wrong answers
# --------------------------------------------------------------------------------------------------
def postprocess_truncates(images):
    images = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return (images * 255).astype(np.uint8)


def postprocess_no_permute(images):
    return ((images / 2 + 0.5).clamp(0, 1) * 255).round().numpy().astype(np.uint8)


def postprocess_float(images):
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def postprocess_no_shift(images):
    return (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def seeded_noise_one_generator(seeds, shape):
    return torch.randn((len(seeds), *shape), generator=torch.Generator().manual_seed(seeds[0]))


def seeded_noise_list(seeds, shape):
    return [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]


def params_not_expanded(unet):
    return {name: sum(p.numel() for p in child.parameters())
            for name, child in unet.named_children()}


def params_counts_tensors(unet):
    return {name: len(list(unet.get_submodule(name).parameters()))
            for name in params_per_block(unet)}


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("check, answer", [
    (ch01.check_postprocess, postprocess),
    (ch01.check_seeded_noise, seeded_noise),
    (ch01.check_params_per_block, params_per_block),
])
def test_reference_answer_passes(check, answer, capsys):
    check(answer)  # a wrong answer raises ExerciseError
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("check, wrong, message", [
    (ch01.check_postprocess, postprocess_truncates, "round first"),
    (ch01.check_postprocess, postprocess_no_permute, "channels-first"),
    (ch01.check_postprocess, postprocess_float, "expected uint8"),
    (ch01.check_postprocess, postprocess_no_shift, "not [0, 1]"),
    (ch01.check_seeded_noise, seeded_noise_one_generator, "one generator"),
    (ch01.check_seeded_noise, seeded_noise_list, "torch.cat"),
    (ch01.check_params_per_block, params_not_expanded, "nn.ModuleLists"),
    (ch01.check_params_per_block, params_counts_tensors, "p.numel()"),
])
def test_typical_mistake_gets_its_hint(check, wrong, message):
    with pytest.raises(ExerciseError, match=re.escape(message)):
        check(wrong)


@pytest.mark.parametrize("check", [ch01.check_postprocess, ch01.check_seeded_noise,
                                   ch01.check_params_per_block])
def test_stub_says_not_implemented(check):
    with pytest.raises(ExerciseError, match="not implemented yet"):
        check(stub)


def test_seeded_noise_is_what_a_pipeline_draws_from_a_list_of_generators():
    """The exercise's promise: image i of a batch made with one generator per seed is the image a
    batch of one makes with seeds[i] (DDIM, η = 0: the start noise is the only randomness)."""
    torch.manual_seed(0)
    unet = ch01._tiny_unet((8, 16), layers_per_block=1, seed=0).eval()
    pipe = DDIMPipeline(unet, DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    generators = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]
    batch = pipe(3, generators([10, 11, 12]), num_inference_steps=3, output_type="pt").images
    alone = pipe(1, generators([11]), num_inference_steps=3, output_type="pt").images
    torch.testing.assert_close(batch[1:2], alone)
