"""Checkers for chapter 01 (using a pipeline): your function against what ddlearn's pipeline does.

    from ddlearn.checks import ch01
    ch01.check_postprocess(postprocess)        # (B, C, H, W) in [-1, 1] -> (B, H, W, C) uint8 array
    ch01.check_seeded_noise(seeded_noise)      # x_T with image i drawn from its own seed
    ch01.check_params_per_block(params_per_block)  # where a UNet keeps its parameters

Each check runs a few seeded cases through the reference (`DiffusionPipeline.postprocess`,
`randn_tensor` with a list of generators, `Module.parameters`) and through your function, which
may not call those: it fails if it does. When yours is off, the check tries the usual mistakes and
names the one your numbers match. `hidden=True` runs other cases (other seeds, shapes, dtypes and
UNets); in keep-going mode a failing check returns `reference_<x>` (see `ddlearn.checks.runner`).
"""

from functools import partial

import numpy as np
import torch
from torch import nn

from ddlearn.checks import (
    ExerciseError,
    as_tensor,
    compare,
    compare_with_mistakes,
    guard,
    randn,
    run_check,
    tiny_unet,
)
from ddlearn.data.transforms import denormalize, numpy_to_pil, pt_to_numpy, to_pil
from ddlearn.models.unet_2d import UNet2DModel
from ddlearn.models.unet_2d_condition import UNet2DConditionModel
from ddlearn.noise import randn_tensor
from ddlearn.pipelines.pipeline import DiffusionPipeline
from ddlearn.viz import to_pil_list


# --------------------------------------------------------------------------------------------------
# Exercise 1: from the model's [-1, 1] tensors to 8-bit images
# --------------------------------------------------------------------------------------------------
def reference_postprocess(images: torch.Tensor) -> np.ndarray:
    """The answer the cells below use while yours is not solved: [-1, 1] -> uint8 (B, H, W, C)."""
    images = (images / 2 + 0.5).clamp(0, 1)  # [-1, 1] -> [0, 1]
    images = images.permute(0, 2, 3, 1).detach().cpu().numpy()  # (B, C, H, W) -> (B, H, W, C)
    return (images * 255).round().astype(np.uint8)


def explain_postprocess(error) -> str:
    """A hint for the errors of mixing torch's and numpy's methods."""
    text = str(error)
    if "numpy.ndarray" in text and "attribute" in text:
        return ("That is a torch method on a numpy array: do the torch steps (.clamp, .permute) "
                "before .numpy(), or use numpy's (np.clip, .transpose(0, 2, 3, 1)).")
    if "'Tensor' object has no attribute" in text:
        return ("That is a numpy method on a tensor: convert with .cpu().numpy() first.")
    if "transpose()" in text:
        return "torch's .transpose swaps two axes; reorder all four with .permute(0, 2, 3, 1)."
    if isinstance(error, IndexError):
        return ("Images may have any number of channels (1 for grey, 4 for RGBA): reorder the "
                "axes with .permute(0, 2, 3, 1) rather than picking channels by hand.")
    return None


def check_postprocess(fn, hidden=False):
    """fn(images) -> uint8 np.ndarray (B, H, W, C), for images (B, C, H, W) in (roughly) [-1, 1].

    Hidden cases: other batch sizes, channels (1, 4), image sizes and float64."""
    yours = guard("postprocess", fn, DiffusionPipeline.postprocess, denormalize, pt_to_numpy,
                  numpy_to_pil, to_pil, to_pil_list, reference_postprocess,
                  explain=explain_postprocess)

    def case(shape, seed, dtype=torch.float32):
        x = randn(*shape, seed=seed).to(dtype) * 0.8
        x[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # the two ends of the range
        expected = (DiffusionPipeline().postprocess(x, "np") * 255).round().astype(np.uint8)
        channels_last = x.permute(0, 2, 3, 1).numpy()  # (B, C, H, W) -> (B, H, W, C)
        unit = np.clip(channels_last / 2 + 0.5, 0, 1)
        mistakes = {
            "`.astype(np.uint8)` truncates (254.9 becomes 254): round first, as diffusers' "
            "numpy_to_pil does with `(images * 255).round()`.": (unit * 255).astype(np.uint8),
            "[-1, 1] maps to [0, 1] with x / 2 + 0.5; (x + 1) alone gives [0, 2].":
                (np.clip(channels_last + 1, 0, 1) * 255).round().astype(np.uint8),
            "the model's images are in [-1, 1], not [0, 1]: map them with x / 2 + 0.5 first.":
                (np.clip(channels_last, 0, 1) * 255).round().astype(np.uint8),
            "values outside [-1, 1] wrapped around (a dark pixel became bright): clip to "
            "[0, 1] before scaling to 255.":  # (uint8 of -3 is 253)
                ((channels_last / 2 + 0.5) * 255).round().astype(np.int64).astype(np.uint8),
        }
        result = yours(x.clone())
        if result is None:
            raise ExerciseError("postprocess: your function returned None — did you forget "
                                "`return`?")
        if torch.is_tensor(result):
            raise ExerciseError("postprocess: you returned a torch tensor; return a numpy array "
                                "(np.ndarray), as diffusers' pipelines do for output_type='np' "
                                "and as PIL's Image.fromarray needs: convert with "
                                ".cpu().numpy(), then .astype(np.uint8).")
        if not isinstance(result, np.ndarray):
            raise ExerciseError(f"postprocess: return one numpy array (B, H, W, C), not a "
                                f"{type(result).__name__}.")
        if result.shape == tuple(x.shape):
            raise ExerciseError("postprocess: your images are channels-first (B, C, H, W); PIL "
                                "and matplotlib want (B, H, W, C): `.permute(0, 2, 3, 1)`.")
        if result.dtype != np.uint8:
            raise ExerciseError(f"postprocess: dtype {result.dtype}, expected uint8 (whole "
                                f"numbers 0..255): finish with `.astype(np.uint8)`.")
        compare_with_mistakes("postprocess", as_tensor(result), as_tensor(expected),
                              {m: as_tensor(wrong) for m, wrong in mistakes.items()},
                              "Steps: x / 2 + 0.5, clip to [0, 1], (B, C, H, W) -> (B, H, W, C), "
                              "* 255, round, uint8; any number of channels.")

    def hidden_cases(rng):
        cases = []
        for channels, dtype in ((1, torch.float32), (4, torch.float32), (3, torch.float64)):
            shape = (rng.randint(1, 4), channels, rng.randint(5, 12), rng.randint(2, 12))
            cases.append(partial(case, shape, rng.randrange(10_000), dtype))
        return cases

    return run_check("postprocess", fn,
                     lambda: case((2, 3, 8, 8), seed=0),
                     lambda: case((1, 3, 5, 7), seed=1),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_postprocess)


# --------------------------------------------------------------------------------------------------
# Exercise 2: one seed per image
# --------------------------------------------------------------------------------------------------
def reference_seeded_noise(seeds: list, shape: tuple) -> torch.Tensor:
    """The answer the cells below use while yours is not solved: image i from seeds[i]."""
    noise = [torch.randn((1, *shape), generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.cat(noise)  # B x (1, *shape) -> (B, *shape)


def explain_seeded_noise(error) -> str:
    text = str(error)
    if "manual_seed" in text:
        return "Seed each image's own generator with one number: loop over seeds."
    if "randn()" in text:
        return "Pass the size as one tuple: torch.randn((1, *shape), generator=g)."
    if isinstance(error, IndexError):
        return ("`shape` may have any length ((2,) for points, (C, H, W) for images): draw "
                "torch.randn((1, *shape), ...) rather than indexing it.")
    return None


def check_seeded_noise(fn, hidden=False):
    """fn(seeds, shape) -> (len(seeds), *shape) noise, image i drawn from its own seed.

    Hidden cases: other seeds and batch sizes; shapes of one, three and four dimensions."""
    yours = guard("seeded_noise", fn, randn_tensor, reference_seeded_noise,
                  explain=explain_seeded_noise)

    def case(seeds, shape):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        expected = randn_tensor((len(seeds), *shape), generators)
        one_generator = torch.Generator().manual_seed(seeds[0])
        mistakes = {
            "you drew the whole batch from one generator seeded with seeds[0]: then image i "
            "depends on the batch size and on the images before it. Give every image its own "
            "generator, `torch.Generator().manual_seed(seeds[i])`.":
                torch.randn((len(seeds), *shape), generator=one_generator),
            "every image starts from the same noise: seed a fresh generator for each image "
            "with its own seed, seeds[i].":
                torch.randn((1, *shape), generator=torch.Generator().manual_seed(seeds[0]))
                .expand(len(seeds), *shape),
            "torch.cat joins along the first axis, so images of `shape` became one long "
            "tensor: draw each as (1, *shape), or join them with torch.stack.":
                torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s))
                           for s in seeds]),
        }
        result = yours(list(seeds), tuple(shape))
        if isinstance(result, (list, tuple)):
            raise ExerciseError("seeded_noise: you returned a list; join the images into one "
                                "batch tensor with torch.cat (of (1, C, H, W)) or torch.stack.")
        compare_with_mistakes("seeded_noise", as_tensor(result), expected, mistakes,
                              "Image i is torch.randn(shape, generator=torch.Generator()"
                              ".manual_seed(seeds[i])); stack them into a (B, *shape) batch.")

    def hidden_cases(rng):
        # 2-D points (chapter 03's toy), 4-channel latents, a short video (C, frames, H, W)
        shapes = ((2,), (4, rng.randint(2, 9), rng.randint(2, 9)), (3, 2, 5, 7))
        return [partial(case, rng.sample(range(2**31), rng.randint(2, 6)), shape)
                for shape in shapes]

    return run_check("seeded_noise", fn,
                     lambda: case([0, 1, 2, 3], (3, 8, 8)),
                     lambda: case([42, 7], (3, 4, 4)),
                     lambda: case([5], (1, 2, 2)),
                     hidden=hidden, hidden_cases=hidden_cases, reference=reference_seeded_noise)


# --------------------------------------------------------------------------------------------------
# Exercise 3: where the parameters are
# --------------------------------------------------------------------------------------------------
def reference_params_per_block(unet: nn.Module) -> dict:
    """The answer the cells below use while yours is not solved: {child name: parameter count},
    the blocks of a ModuleList as 'name.i' entries."""
    counts = {}
    for name, child in unet.named_children():
        if isinstance(child, nn.ModuleList):  # down_blocks, up_blocks: one entry per block
            for i, block in enumerate(child):
                counts[f"{name}.{i}"] = sum(p.numel() for p in block.parameters())
        else:
            counts[name] = sum(p.numel() for p in child.parameters())
    return counts


def explain_params(error) -> str:
    if "generator" in str(error) or "numel" in str(error):
        return ("module.parameters() yields tensors one by one: count their elements with "
                "sum(p.numel() for p in block.parameters()).")
    return None


def hidden_unets(rng) -> list:
    """Other UNets than the public ones: class-conditional, without attention, deeper, and a
    text-conditional UNet2DConditionModel (Stable Diffusion's kind)."""
    width, levels = rng.choice((8, 16)), rng.randint(2, 4)
    plain = dict(norm_num_groups=4, block_out_channels=(width,) * levels,
                 down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels)
    cross = dict(down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    return [UNet2DModel(**plain, in_channels=1, out_channels=1, num_class_embeds=rng.randint(2, 9)),
            UNet2DModel(**plain, layers_per_block=rng.randint(1, 3), add_attention=False),
            tiny_unet((8,) * levels, layers_per_block=rng.randint(1, 3)),
            UNet2DConditionModel(**cross, block_out_channels=(width, width), layers_per_block=1,
                                 norm_num_groups=4, cross_attention_dim=8, attention_head_dim=4)]


def check_params_per_block(fn, hidden=False):
    """fn(unet) -> {name: number of parameters}, one entry per block, summing to the total.

    Hidden cases: other UNets (class or text conditional, other depths and widths)."""
    yours = guard("params_per_block", fn, reference_params_per_block, explain=explain_params)

    def case(unet):
        expected = {k: v for k, v in reference_params_per_block(unet).items() if v > 0}
        result = yours(unet)
        if not isinstance(result, dict):
            raise ExerciseError(f"params_per_block: expected a dict {{name: count}}, got "
                                f"{type(result).__name__}")
        result = {k: v for k, v in result.items() if v != 0}  # parameter-free blocks: optional
        missing, extra = sorted(set(expected) - set(result)), sorted(set(result) - set(expected))
        if missing:
            hint = (" `down_blocks` and `up_blocks` are nn.ModuleLists: loop over their children "
                    "and name them 'down_blocks.0', 'down_blocks.1', ..."
                    if any("." in k for k in missing) else
                    " Loop over unet.named_children() rather than listing names: UNets differ.")
            raise ExerciseError(f"params_per_block: missing {missing}.{hint}")
        if extra:
            raise ExerciseError(f"params_per_block: unexpected keys {extra}; use the names from "
                                f"unet.named_children() (and 'name.i' for blocks in a ModuleList)")
        for name, count in expected.items():
            block = unet.get_submodule(name)
            if result[name] == len(list(block.parameters())):
                raise ExerciseError(f"params_per_block[{name!r}]: {result[name]} is the number of "
                                    f"parameter *tensors*; count their elements with p.numel().")
            compare(f"params_per_block[{name!r}]", result[name], count,
                    "Sum p.numel() over block.parameters() (which recurses into sub-modules).")

    def hidden_cases(rng):
        return [partial(case, unet) for unet in hidden_unets(rng)]

    return run_check("params_per_block", fn,
                     lambda: case(tiny_unet((8, 16), layers_per_block=1, seed=0)),
                     lambda: case(tiny_unet((16, 16, 32), layers_per_block=2, seed=1)),
                     hidden=hidden, hidden_cases=hidden_cases,
                     reference=reference_params_per_block)
