"""Textual inversion: ddlearn loads diffusers' and A1111's embedding files as diffusers does (same
token ids, prompt embeddings and images), writes files diffusers loads, and unloads cleanly."""

import diffusers
import pytest
import torch
import transformers
from model_harness import assert_close
from safetensors import safe_open
from safetensors.torch import save_file

import ddlearn
from ddlearn.data import shipped_model
from ddlearn.hub import HubOfflineError
from ddlearn.textual_inversion import (
    TextualInversionLoaderMixin,
    add_placeholder_token,
    learned_embeds,
    restore_other_embeddings,
    save_textual_inversion,
)

MODEL = shipped_model("tiny-sd-butterflies")  # text encoder hidden size 64, vocabulary 157
TOLERANCE = 2e-3  # max pixel difference, images in [0, 1]


Pipe = ddlearn.StableDiffusionPipeline  # it has diffusers' TextualInversionLoaderMixin methods


def pipelines() -> tuple:
    theirs = diffusers.StableDiffusionPipeline.from_pretrained(MODEL)
    return Pipe.from_pretrained(MODEL), theirs


def random_embeds(*shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def images_of(pipe, prompt):
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt, num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                output_type="np").images


def ids_of(pipe, prompt) -> list:
    return pipe.tokenizer(pipe.maybe_convert_prompt(prompt, pipe.tokenizer)).input_ids


def assert_same_prompt(ours, theirs, prompt):
    assert ids_of(ours, prompt) == ids_of(theirs, prompt)
    assert_close(ours.encode_prompt(prompt, 1, False)[0].detach(),
                 theirs.encode_prompt(prompt, "cpu", 1, False)[0].detach(), rtol=0, atol=1e-5,
                 what="prompt embeddings")
    assert_close(images_of(ours, prompt), images_of(theirs, prompt), rtol=0, atol=TOLERANCE,
                 what="images")


# ---- diffusers -> ddlearn ----------------------------------------------------------------------
def test_pipelines_have_the_loader_methods():
    for cls in (ddlearn.StableDiffusionPipeline, ddlearn.StableDiffusionImg2ImgPipeline):
        assert issubclass(cls, TextualInversionLoaderMixin)
        assert hasattr(cls, "load_lora_weights")


@pytest.mark.parametrize("shape,as_folder", [((64,), True), ((1, 64), False), ((2, 64), True)])
def test_diffusers_file_loads_as_in_diffusers(tmp_path, shape, as_folder):
    path = tmp_path / "learned_embeds.safetensors"
    save_file({"<moth>": random_embeds(*shape)}, path, metadata={"format": "pt"})
    ours, theirs = pipelines()
    for pipe in (ours, theirs):
        pipe.load_textual_inversion(tmp_path if as_folder else path)
    prompt = "a red <moth>"
    vectors = shape[0] if len(shape) == 2 else 1
    assert ours.maybe_convert_prompt(prompt, ours.tokenizer) == \
        " ".join(["a red <moth>"] + [f"<moth>_{i}" for i in range(1, vectors)])
    assert_same_prompt(ours, theirs, prompt)
    assert ours.text_encoder.config.vocab_size == 157 + vectors


def test_a1111_files_tensors_and_lists_load_as_in_diffusers(tmp_path):
    torch.save({"string_to_param": {"*": random_embeds(2, 64)}, "name": "<webui>",
                "string_to_token": {"*": torch.tensor(265)}, "step": 500}, tmp_path / "webui.pt")
    save_file({"emb_params": random_embeds(1, 64, seed=1)}, tmp_path / "style.safetensors")
    ours, theirs = pipelines()
    for pipe in (ours, theirs):
        pipe.load_textual_inversion(tmp_path / "webui.pt")  # the token is the file's "name"
        pipe.load_textual_inversion([tmp_path / "style.safetensors", random_embeds(64, seed=2)],
                                    token=["<style>", "<dot>"])
        pipe.load_textual_inversion(random_embeds(2, 64, seed=3), token=["<x>", "<y>"])
    assert_same_prompt(ours, theirs, "<webui> <style>, <dot> <x> <y>")


def test_maybe_convert_prompt_as_diffusers_and_idempotent():
    ours, theirs = pipelines()
    for pipe in (ours, theirs):
        pipe.load_textual_inversion({"<b>": random_embeds(3, 64)})
    prompts = ["a <b> moth", "<b>, <b>", "no token"]
    converted = ours.maybe_convert_prompt(prompts, ours.tokenizer)
    assert converted == theirs.maybe_convert_prompt(prompts, theirs.tokenizer)
    assert converted[0] == "a <b> <b>_1 <b>_2 moth"
    assert ours.maybe_convert_prompt(converted, ours.tokenizer) == converted  # twice: same


# ---- ddlearn -> diffusers ----------------------------------------------------------------------
def train_steps(pipe, ids, steps=2):
    """Eq. 2 of Gal et al. on random latents: only E_tok trains, and only `ids` rows move."""
    text_encoder, unet = pipe.text_encoder, pipe.unet
    text_encoder.requires_grad_(False), unet.requires_grad_(False)
    table = text_encoder.get_input_embeddings().requires_grad_(True)
    optimizer = torch.optim.AdamW(table.parameters(), lr=1e-1, weight_decay=1e-2)
    orig = table.weight.detach().clone()
    scheduler = ddlearn.DDPMScheduler.from_config(pipe.scheduler.config)
    prompt = pipe.maybe_convert_prompt("a red <moth>", pipe.tokenizer)
    tokens = pipe.tokenizer(prompt, padding="max_length", max_length=16,
                            return_tensors="pt").input_ids
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        z_0, noise = torch.randn(2, 1, 4, 8, 8, generator=g)
        t = torch.tensor([500])
        pred = unet(scheduler.add_noise(z_0, noise, t), t, text_encoder(tokens)[0]).sample
        torch.nn.functional.mse_loss(pred, noise).backward()
        optimizer.step(), optimizer.zero_grad()
        restore_other_embeddings(text_encoder, orig, ids)
    return orig


def test_learned_embeddings_save_and_load_in_diffusers(tmp_path):
    ours, theirs = pipelines()
    ids = add_placeholder_token(ours.tokenizer, ours.text_encoder, "<moth>", "red", num_vectors=2)
    table = ours.text_encoder.get_input_embeddings().weight
    red = ours.tokenizer.convert_tokens_to_ids("red</w>")
    assert ids == [157, 158] and torch.equal(table[ids], table[[red, red]])
    orig = train_steps(ours, ids)
    table = ours.text_encoder.get_input_embeddings().weight
    others = [i for i in range(table.shape[0]) if i not in ids]
    assert torch.equal(table[others], orig[others])  # every other row restored exactly
    assert not torch.allclose(table[ids], orig[ids])  # v* moved
    path = save_textual_inversion(tmp_path, "<moth>", learned_embeds(ours.text_encoder, ids))
    with safe_open(path, "pt") as f:
        assert path.name == "learned_embeds.safetensors" and f.metadata() == {"format": "pt"}
        assert list(f.keys()) == ["<moth>"] and f.get_tensor("<moth>").shape == (2, 64)
    theirs.load_textual_inversion(tmp_path)
    with torch.no_grad():
        assert_same_prompt(ours, theirs, "a red <moth>")


# ---- the text encoder's embedding table, against transformers ---------------------------------
@torch.no_grad()
def test_resize_token_embeddings_matches_transformers(tmp_path):
    ours = ddlearn.CLIPTextModel.from_pretrained(MODEL / "text_encoder")
    theirs = transformers.CLIPTextModel.from_pretrained(MODEL / "text_encoder")
    ids = torch.tensor([[0, 40, 60, 80, 1, 1]])
    before = ours(ids).last_hidden_state
    for size in (160, 150):  # grow (new rows from N(μ, 1e-9 Σ), same seed), then shrink
        torch.manual_seed(0)
        table = ours.resize_token_embeddings(size)
        torch.manual_seed(0)
        expected = theirs.resize_token_embeddings(size)
        assert table is ours.get_input_embeddings() and table.weight.requires_grad
        assert ours.config.vocab_size == theirs.config.vocab_size == size
        assert_close(table.weight, expected.weight, rtol=0, atol=1e-6, what="embedding table")
        assert_close(ours(ids).last_hidden_state, before, rtol=0, atol=1e-6, what="old tokens")
    ours.save_pretrained(tmp_path)
    again = transformers.CLIPTextModel.from_pretrained(tmp_path)
    assert again.get_input_embeddings().weight.shape == (150, 64)
    ours.set_input_embeddings(torch.nn.Embedding(170, 64))
    assert ours.config.vocab_size == 170 and ours.get_input_embeddings().num_embeddings == 170


# ---- unloading ---------------------------------------------------------------------------------
def test_unload_restores_tokenizer_embeddings_and_images():
    ours, theirs = pipelines()
    prompt = "a <a> moth <b>"
    ids, table = ids_of(ours, prompt), ours.text_encoder.get_input_embeddings().weight.clone()
    before = images_of(ours, prompt)
    for pipe in (ours, theirs):
        pipe.load_textual_inversion([{"<a>": random_embeds(64)}, {"<b>": random_embeds(2, 64)}])
    ours.unload_textual_inversion("<b>")  # with <b>_1 (diffusers would keep <b>_1)
    assert sorted(ours.tokenizer.get_added_vocab()) == ["<a>", "<|endoftext|>", "<|startoftext|>"]
    only_a, _ = pipelines()
    only_a.load_textual_inversion({"<a>": random_embeds(64)})
    assert ids_of(ours, prompt) == ids_of(only_a, prompt)
    assert_close(images_of(ours, prompt), images_of(only_a, prompt), rtol=0, atol=0, what="<a>")
    ours.unload_textual_inversion()
    assert ids_of(ours, prompt) == ids and len(ours.tokenizer) == 157
    assert ours.text_encoder.config.vocab_size == 157
    assert torch.equal(ours.text_encoder.get_input_embeddings().weight, table)
    assert_close(images_of(ours, prompt), before, rtol=0, atol=0, what="images after unloading")
    theirs.unload_textual_inversion()
    assert_same_prompt(ours, theirs, prompt)
    with pytest.raises(ValueError, match="none of .'<zzz>'. is loaded"):
        ours.unload_textual_inversion("<zzz>")


# ---- clear errors ------------------------------------------------------------------------------
def write(tmp_path, name, content) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        save_file(content, path)
    return str(path)


ERRORS = {  # name: (source, token, error, message)
    "token in the vocabulary": (lambda p: {"<a>": random_embeds(64)}, None, ValueError,
                                r"'<a>' is already in the tokenizer's vocabulary .*unload"),
    "a word of the tokenizer": (lambda p: {"a": random_embeds(64)}, None, ValueError,
                                r"'a' is already .*one of the tokenizer's own words"),
    "next vector exists": (lambda p: {"<e>": random_embeds(64)}, None, ValueError,
                           r"'<e>_1' is already"),  # prompts would expand "<e>" into "<e> <e>_1"
    "another text encoder": (lambda p: {"<sd15>": random_embeds(768)}, None, ValueError,
                             "made for another text encoder .768 vs 64"),
    "not a safetensors or pt file": (lambda p: write(p, "x.safetensors", b"not a tensor file"),
                                     "<x>", ValueError, "neither a safetensors file nor"),
    "unknown format": (lambda p: {"clip_l": random_embeds(64), "clip_g": random_embeds(64)},
                       "<x>", ValueError, "not a textual inversion: keys .'clip_g', 'clip_l'"),
    "missing file in folder": (lambda p: p, None, FileNotFoundError,
                               "no learned_embeds.safetensors or learned_embeds.bin in"),
    "missing file": (lambda p: str(p / "nope.safetensors"), None, FileNotFoundError,
                     "neither a file, a folder, nor a Hub id"),
    "A1111 file without token": (lambda p: write(p, "s.safetensors", {"emb_params":
                                                                        random_embeds(1, 64)}),
                                 None, ValueError, "does not name its token; pass .* token="),
    "tensor without token": (lambda p: random_embeds(64), None, ValueError, "token="),
    "tokens and embeddings": (lambda p: [{"<c>": random_embeds(64)}], ["<c>", "<d>"],
                              ValueError, "1 embeddings but 2 tokens"),
    "duplicate tokens": (lambda p: random_embeds(2, 64), ["<c>", "<c>"], ValueError,
                         "'<c>' is given twice"),
    "Hub id offline": (lambda p: "sd-concepts-library/cat-toy", None, HubOfflineError,
                       "'sd-concepts-library/cat-toy' \\(offline and it is not in the local "
                       "cache\\). Download it once while online"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_clear_errors_change_nothing(tmp_path, monkeypatch, case):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source, token, error, message = ERRORS[case]
    pipe = Pipe.from_pretrained(MODEL)
    pipe.load_textual_inversion([{"<a>": random_embeds(64)}, {"<e>_1": random_embeds(64)}])
    size, vocab = len(pipe.tokenizer), pipe.text_encoder.get_input_embeddings().num_embeddings
    with pytest.raises(error, match=message):
        pipe.load_textual_inversion(source(tmp_path), token=token)
    assert len(pipe.tokenizer) == size
    assert pipe.text_encoder.get_input_embeddings().num_embeddings == vocab


def test_training_helper_errors(tmp_path):
    pipe = Pipe.from_pretrained(MODEL)
    args = pipe.tokenizer, pipe.text_encoder
    with pytest.raises(ValueError, match="'a' is already in the tokenizer's vocabulary"):
        add_placeholder_token(*args, "a")
    with pytest.raises(ValueError, match="'zzq' is 3 tokens"):
        add_placeholder_token(*args, "<new>", initializer_token="zzq")
    assert len(pipe.tokenizer) == 157  # nothing added by a refused call
    with pytest.raises(ValueError, match="safetensors only"):
        save_textual_inversion(tmp_path / "embeds.bin", "<new>", random_embeds(64))
    with pytest.raises(TypeError, match="unexpected keyword argument 'weights_name'.*weight_name"):
        pipe.load_textual_inversion({"<new>": random_embeds(64)}, weights_name="x.bin")
