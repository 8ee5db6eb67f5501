"""ddlearn's CLIPTextModel vs transformers': same weights, same ids -> same outputs, both ways."""

import json

import pytest
import torch
from model_harness import assert_close, assert_round_trip, randomise, save_and_load
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTokenizer
from transformers import CLIPTextModel as HFCLIPTextModel

from ddlearn.models.text_encoder import CLIPTextModel

TINY = dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_attention_heads=4,
            max_position_embeddings=16, bos_token_id=998, eos_token_id=999, pad_token_id=1)
# max |ours - transformers| <= 1e-5: no looser anywhere than an elementwise rtol=1e-4, atol=1e-5
CLOSE = dict(rtol=0, atol=1e-5)


def random_hf_model(seed=0, **overrides) -> HFCLIPTextModel:
    """A transformers CLIPTextModel with every parameter (layer norms included) random."""
    return randomise(HFCLIPTextModel(CLIPTextConfig(**{**TINY, "num_hidden_layers": 2,
                                                       **overrides})), seed)


def random_ids(seed=1, eos=999, batch=3, length=12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 998, (batch, length), generator=g)
    for b in range(batch):  # EOS at a different place in each row, then padding with EOS
        ids[b, 4 + 3 * b:] = eos
    return ids


def tensors(output, hidden=True) -> tuple:
    """A CLIP text output's tensors: last_hidden_state, pooler_output, then each hidden state."""
    return (output.last_hidden_state, output.pooler_output,
            *(output.hidden_states if hidden else ()))


def assert_same(ours, theirs, hidden=True):
    pairs = zip(tensors(ours, hidden), tensors(theirs, hidden), strict=True)
    for i, (a, b) in enumerate(pairs):
        assert_close(a, b, **CLOSE, what=f"tensor {i} of the CLIP output")


@pytest.mark.parametrize("hidden_act,num_hidden_layers,eos_token_id",
                         [("quick_gelu", 2, 999), ("gelu", 5, 999), ("quick_gelu", 3, 2)])
@torch.no_grad()
def test_transformers_checkpoint_loads_and_matches(tmp_path, hidden_act, num_hidden_layers,
                                                   eos_token_id):
    hf = random_hf_model(hidden_act=hidden_act, num_hidden_layers=num_hidden_layers,
                         eos_token_id=eos_token_id)
    ids = random_ids(eos=eos_token_id)
    if eos_token_id == 2:  # legacy rule: EOS is the largest id, so make it so
        ids[:, -1] = 999
    mask = (torch.arange(12) < torch.tensor([[6], [12], [9]])).long()

    def forward(model):  # every tensor of the output, without and with an attention mask
        return (*tensors(model(ids, output_hidden_states=True)),
                *tensors(model(ids, attention_mask=mask, output_hidden_states=True)))

    assert_round_trip(hf, CLIPTextModel, forward, folder=tmp_path, **CLOSE)


@torch.no_grad()
def test_ddlearn_save_loads_in_transformers(tmp_path):
    ours = randomise(CLIPTextModel(**TINY, num_hidden_layers=3, hidden_act="gelu"))
    hf = save_and_load(ours, HFCLIPTextModel, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["CLIPTextModel"] and "_class_name" not in config
    # the SD checkpoint layout: every key under text_model.
    assert all(k.startswith("text_model.") for k in load_file(tmp_path / "model.safetensors"))
    assert hf.config.hidden_act == "gelu" and hf.config.num_hidden_layers == 3
    ids = random_ids()
    assert_same(ours(ids, output_hidden_states=True), hf(ids, output_hidden_states=True))
    # ... and back again, through transformers' own save (which drops the text_model. prefix)
    again = save_and_load(hf, CLIPTextModel, tmp_path / "again")
    assert_same(again(ids), ours(ids), hidden=False)


@torch.no_grad()
def test_old_sd_checkpoint_with_position_ids_buffer_loads(tmp_path):
    """SD 1.x text encoders were saved by transformers 4.2x, with a persistent position_ids."""
    ours = randomise(CLIPTextModel(**TINY, num_hidden_layers=2))
    ours.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["text_model.embeddings.position_ids"] = torch.arange(16)[None]
    save_file(state, tmp_path / "model.safetensors")
    loaded = CLIPTextModel.from_pretrained(tmp_path)
    ids = random_ids()
    assert torch.equal(loaded(ids).last_hidden_state, ours(ids).last_hidden_state)


def tiny_tokenizer(folder) -> CLIPTokenizer:
    """A CLIP BPE tokenizer over letters, with merges that spell 'blue' and 'red' as one token."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["<|startoftext|>", "<|endoftext|>"] + letters + [c + "</w>" for c in letters]
    merges = ["b l", "bl u", "blu e</w>", "r e", "re d</w>"]
    tokens += ["bl", "blu", "blue</w>", "re", "red</w>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(folder)


@torch.no_grad()
def test_text_to_ids_to_embeddings(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    batch = tokenizer(["a blue butterfly", "red"], padding="max_length", max_length=16,
                      truncation=True, return_tensors="pt")
    ids = batch.input_ids
    vocab = tokenizer.get_vocab()
    assert ids[0, 0] == vocab["<|startoftext|>"] and ids[0, 2] == vocab["blue</w>"]
    assert ids[1].tolist()[:3] == [0, vocab["red</w>"], 1]
    config = dict(TINY, vocab_size=len(vocab), bos_token_id=0, eos_token_id=1)
    hf = random_hf_model(**config)
    ours = save_and_load(hf, CLIPTextModel, tmp_path / "text_encoder")
    assert_same(ours(ids, output_hidden_states=True), hf(ids, output_hidden_states=True))


def test_too_many_tokens_is_a_clear_error():
    model = CLIPTextModel(**TINY, num_hidden_layers=1)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(NotImplementedError, match="hidden_act='relu'"):
        CLIPTextModel(**TINY, hidden_act="relu")


@pytest.mark.parametrize("eos_token_id", [999, 2])
@torch.no_grad()
def test_with_projection_matches_transformers_both_ways(tmp_path, eos_token_id):
    """SD3's text encoders: text_embeds (projected pooled EOS row), the hidden states SD3 reads
    (hidden_states[-2]), and the checkpoint, both ways."""
    from transformers import CLIPTextModelWithProjection as HFWithProjection

    from ddlearn import CLIPTextModelWithProjection

    config = CLIPTextConfig(**{**TINY, "num_hidden_layers": 3, "projection_dim": 24,
                               "eos_token_id": eos_token_id})
    reference = randomise(HFWithProjection(config), seed=3)
    ids = random_ids(eos=eos_token_id)
    forward = lambda model: (lambda out: (out.text_embeds, out.last_hidden_state,
                                          *out.hidden_states))(
        model(ids, output_hidden_states=True))
    ours, back = assert_round_trip(reference, CLIPTextModelWithProjection, forward,
                                   folder=tmp_path, **CLOSE)
    assert ours(ids)[0].shape == (3, 24)  # [0] is text_embeds, as in transformers
    assert json.loads((tmp_path / "ddlearn" / "config.json").read_text())["architectures"] == \
        ["CLIPTextModelWithProjection"]
