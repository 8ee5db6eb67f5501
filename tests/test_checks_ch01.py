"""Chapter 01's checks are honest: the notebook's solutions pass the public and the hidden cases;
answers that call ddlearn's own implementation, or that only fit the public cases, fail; a wrong
answer gets its hint; in keep-going mode a failing check hands back the reference answer."""

import numpy as np
import pytest
import torch

import ddlearn.checks.runner as runner
from ddlearn.checks import ExerciseError, ch01, tiny_unet
from ddlearn.data.transforms import denormalize, pt_to_numpy
from ddlearn.noise import randn_tensor
from ddlearn.pipelines.pipeline import DiffusionPipeline
from ddlearn.viz import to_pil_list


# the notebook's solution cells
def postprocess(images: torch.Tensor) -> np.ndarray:
    images = (images / 2 + 0.5).clamp(0, 1)  # [-1, 1] -> [0, 1]
    images = images.permute(0, 2, 3, 1).cpu().numpy()  # (B, C, H, W) -> (B, H, W, C)
    return (images * 255).round().astype(np.uint8)


def seeded_noise(seeds: list, shape: tuple) -> torch.Tensor:
    noise = [torch.randn((1, *shape), generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.cat(noise)  # B x (1, C, H, W) -> (B, C, H, W)


def params_per_block(unet: torch.nn.Module) -> dict:
    counts = {}
    for name, child in unet.named_children():
        if isinstance(child, torch.nn.ModuleList):  # down_blocks, up_blocks: one entry per block
            for i, block in enumerate(child):
                counts[f"{name}.{i}"] = sum(p.numel() for p in block.parameters())
        else:
            counts[name] = sum(p.numel() for p in child.parameters())
    return counts


SOLUTIONS = [(ch01.check_postprocess, postprocess), (ch01.check_seeded_noise, seeded_noise),
             (ch01.check_params_per_block, params_per_block)]


@pytest.mark.parametrize("check, solution", SOLUTIONS)
@pytest.mark.parametrize("hidden", [False, True, 7, 123])
def test_solution_passes(check, solution, hidden, capsys):
    assert check(solution, hidden=hidden) is solution
    assert "✅" in capsys.readouterr().out


# answers that call ddlearn's implementation of the exercise
CHEATS = [
    (ch01.check_postprocess, lambda x: (DiffusionPipeline().postprocess(x, "np") * 255)
     .round().astype(np.uint8), "DiffusionPipeline.postprocess"),
    (ch01.check_postprocess, lambda x: (pt_to_numpy(denormalize(x)) * 255).round()
     .astype(np.uint8), "denormalize"),
    (ch01.check_postprocess, lambda x: np.stack([np.array(im) for im in to_pil_list(x)]),
     "to_pil_list"),
    (ch01.check_postprocess, lambda x: ch01.reference_postprocess(x), "reference_postprocess"),
    (ch01.check_seeded_noise, lambda seeds, shape: randn_tensor(
        (len(seeds), *shape), [torch.Generator().manual_seed(s) for s in seeds]), "randn_tensor"),
    (ch01.check_seeded_noise, lambda seeds, shape: ch01.reference_seeded_noise(seeds, shape),
     "reference_seeded_noise"),
    (ch01.check_params_per_block, lambda unet: ch01.reference_params_per_block(unet),
     "reference_params_per_block"),
]


@pytest.mark.parametrize("check, cheat, name", CHEATS)
def test_calling_ddlearn_fails(check, cheat, name):
    with pytest.raises(ExerciseError, match="ddlearn's own") as error:
        check(cheat)
    assert name in str(error.value)


# answers that fit only the public cases
def postprocess_rgb_only(images):  # picks out three channels by hand
    x = (images / 2 + 0.5).clamp(0, 1).numpy()
    return (np.stack([x[:, 0], x[:, 1], x[:, 2]], axis=-1) * 255).round().astype(np.uint8)


def seeded_noise_images_only(seeds, shape):  # assumes (C, H, W)
    return torch.cat([torch.randn(1, shape[0], shape[1], shape[2],
                                  generator=torch.Generator().manual_seed(s)) for s in seeds])


def params_listed_names(unet):  # names the UNet2DModel's children by hand
    names = ["conv_in", "time_proj", "time_embedding", "mid_block", "conv_norm_out", "conv_out"]
    counts = {n: sum(p.numel() for p in unet.get_submodule(n).parameters()) for n in names}
    for list_name in ("down_blocks", "up_blocks"):
        for i, block in enumerate(getattr(unet, list_name)):
            counts[f"{list_name}.{i}"] = sum(p.numel() for p in block.parameters())
    return counts


@pytest.mark.parametrize("check, answer", [(ch01.check_postprocess, postprocess_rgb_only),
                                           (ch01.check_seeded_noise, seeded_noise_images_only),
                                           (ch01.check_params_per_block, params_listed_names)])
@pytest.mark.parametrize("hidden", [True, 7])
def test_public_only_answer_fails_hidden(check, answer, hidden):
    check(answer)
    with pytest.raises(ExerciseError):
        check(answer, hidden=hidden)


# wrong answers and their hints
def postprocess_tensor(images):
    images = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    return (images * 255).round().to(torch.uint8)


def postprocess_astype_on_tensor(images):
    return ((images / 2 + 0.5).clamp(0, 1) * 255).round().astype(np.uint8)


def postprocess_numpy_first(images):
    x = images.numpy()
    return (np.clip(x / 2 + 0.5, 0, 1).permute(0, 2, 3, 1) * 255).round().astype(np.uint8)


def postprocess_torch_transpose(images):
    x = (images / 2 + 0.5).clamp(0, 1).transpose(0, 2, 3, 1)
    return (x.numpy() * 255).round().astype(np.uint8)


def postprocess_no_clip(images):
    x = (images / 2 + 0.5).permute(0, 2, 3, 1).numpy()
    return (x * 255).round().astype(np.int64).astype(np.uint8)


def seeded_noise_cat_images(seeds, shape):
    return torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(s))
                      for s in seeds])


def seeded_noise_seed_list(seeds, shape):
    return torch.randn((len(seeds), *shape), generator=torch.Generator().manual_seed(seeds))


def seeded_noise_same(seeds, shape):
    g = torch.Generator().manual_seed(seeds[0])
    return torch.randn((1, *shape), generator=g).repeat(len(seeds), *[1] * len(shape))


def params_len_of_generator(unet):
    return {name: len(child.parameters()) for name, child in unet.named_children()}


def params_numel_of_module(unet):
    return {name: child.numel() for name, child in unet.named_children()}


@pytest.mark.parametrize("check, wrong, words", [
    (ch01.check_postprocess, postprocess_tensor, "return a numpy array (np.ndarray)"),
    (ch01.check_postprocess, postprocess_astype_on_tensor, ".cpu().numpy() first"),
    (ch01.check_postprocess, postprocess_numpy_first, "torch method on a numpy array"),
    (ch01.check_postprocess, postprocess_torch_transpose, ".permute(0, 2, 3, 1)"),
    (ch01.check_postprocess, postprocess_no_clip, "wrapped around"),
    (ch01.check_seeded_noise, seeded_noise_cat_images, "torch.stack"),
    (ch01.check_seeded_noise, seeded_noise_seed_list, "loop over seeds"),
    (ch01.check_seeded_noise, seeded_noise_same, "same noise"),
    (ch01.check_params_per_block, params_len_of_generator, "p.numel()"),
    (ch01.check_params_per_block, params_numel_of_module, "p.numel()"),
])
def test_wrong_answer_gets_its_hint(check, wrong, words):
    with pytest.raises(ExerciseError) as error:
        check(wrong)
    assert words in str(error.value)


def test_references_give_the_solutions_results():
    x = torch.randn(3, 3, 6, 5, generator=torch.Generator().manual_seed(0)) * 1.2
    np.testing.assert_array_equal(ch01.reference_postprocess(x), postprocess(x))
    torch.testing.assert_close(ch01.reference_seeded_noise([3, 1, 4], (2, 5, 5)),
                               seeded_noise([3, 1, 4], (2, 5, 5)), rtol=0, atol=0)
    unet = tiny_unet((16, 32), layers_per_block=2)
    assert ch01.reference_params_per_block(unet) == params_per_block(unet)


@pytest.mark.parametrize("check, reference, wrong", [
    (ch01.check_postprocess, ch01.reference_postprocess, postprocess_tensor),
    (ch01.check_seeded_noise, ch01.reference_seeded_noise, seeded_noise_same),
    (ch01.check_params_per_block, ch01.reference_params_per_block, params_numel_of_module),
])
def test_keep_going_returns_the_reference(check, reference, wrong, monkeypatch, capsys):
    monkeypatch.setattr(runner, "KEEP_GOING", True)
    assert check(wrong) is reference
    assert "❌" in capsys.readouterr().err
