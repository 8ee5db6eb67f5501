"""Chapter 01, exercise 3: where a UNet keeps its parameters.

`params_per_block(unet)` returns {child name: number of parameters}, one entry per child of the
UNet and per block of its ModuleLists ('down_blocks.0', ...), summing to the total; reference:
`sum(p.numel() for p in block.parameters())`. The check names the usual mistakes (missing
ModuleList blocks, hard-coded names, counting parameter tensors instead of their elements).
Hidden cases: other UNets (class or text conditional, without attention, other depths and widths).
"""

from functools import partial

from torch import nn

from ddlearn.checks import ExerciseError, compare, guard, run_check, tiny_unet
from ddlearn.models.unet_2d import UNet2DModel
from ddlearn.models.unet_2d_condition import UNet2DConditionModel


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
