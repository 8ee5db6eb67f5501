"""CLIP's text encoder: the transformer turning prompt token ids into the vectors a UNet attends to.

Mirrors `transformers.CLIPTextModel` (what Stable Diffusion's `text_encoder/` folder holds): the
same config keys, the same parameter names (`text_model.encoder.layers.0.self_attn.q_proj.weight`,
...), so an SD checkpoint's `text_encoder/model.safetensors` loads key for key and a saved model
loads back in transformers. Read order = build order: embeddings -> N pre-LN layers -> norm.

    x_0 = E_tok[ids] + E_pos[0..T-1]                                   (B, T, D)
    x_l = x_{l-1} + Attn(LN1(x_{l-1}), causal)                          each layer l = 1..N
    x_l = x_l + MLP(LN2(x_l)),   MLP(h) = fc2(act(fc1(h)))
    last_hidden_state = LN_final(x_N);  pooler_output = last_hidden_state at the EOS token
    text_embeds = pooler_output W_proj      (CLIPTextModelWithProjection: SD3's two CLIPs, SDXL's)

Notation: B batch, T tokens (<= max_position_embeddings), D = hidden_size, H heads of size D/H.
`hidden_states` (when asked) is (x_0, x_1, ..., x_N), before the final norm, like transformers';
Stable Diffusion 2.x conditions on the penultimate one, `final_layer_norm(hidden_states[-2])`.

`get_input_embeddings`, `set_input_embeddings` and `resize_token_embeddings` are transformers'
handles on E_tok; textual inversion (ddlearn/textual_inversion/) adds rows to it.

`CLIPTextModelWithProjection` adds CLIP's text projection (`text_projection.weight`, no bias) and
returns (text_embeds, last_hidden_state, hidden_states), as transformers' class does.

References: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision" (CLIP), sec. 2.4; Vaswani et al. 2017 (attention, eq. 1); Hendrycks & Gimpel 2016
(GELU, and the sigmoid approximation x*sigmoid(1.702x) that CLIP calls quick_gelu).
"""

import json
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ddlearn.config import FrozenConfig, register_to_config
from ddlearn.files import atomic_write_text
from ddlearn.models.modeling import ModelMixin
from ddlearn.options import refuse

ACTIVATIONS = {"quick_gelu": lambda x: x * torch.sigmoid(1.702 * x), "gelu": F.gelu}


class CLIPTextModelOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # (B, T, D), after the final layer norm
    pooler_output: torch.Tensor  # (B, D), the EOS token's row of last_hidden_state
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None  # N+1 tensors (B, T, D), if asked


class CLIPEncoderLayer(nn.Module):
    """One pre-LN transformer layer: x + Attn(LN1(x)), then x + MLP(LN2(x))."""

    def __init__(self, D: int, num_heads: int, intermediate_size: int, act: str, eps: float):
        super().__init__()
        self.num_heads, self.act = num_heads, ACTIVATIONS[act]
        self.layer_norm1 = nn.LayerNorm(D, eps=eps)
        self.self_attn = nn.ModuleDict({name: nn.Linear(D, D)
                                        for name in ("q_proj", "k_proj", "v_proj", "out_proj")})
        self.layer_norm2 = nn.LayerNorm(D, eps=eps)
        self.mlp = nn.ModuleDict(dict(fc1=nn.Linear(D, intermediate_size),
                                      fc2=nn.Linear(intermediate_size, D)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # 1. causal self-attention, softmax(QK^T / sqrt(d)) V per head (Vaswani et al. eq. 1)
        B, T, D = x.shape
        h, attn = self.layer_norm1(x), self.self_attn
        # (B, T, D) -> (B, H, T, D/H)
        q, k, v = (attn[n](h).view(B, T, self.num_heads, -1).transpose(1, 2)
                   for n in ("q_proj", "k_proj", "v_proj"))
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + attn["out_proj"](h.transpose(1, 2).reshape(B, T, D))  # (B, H, T, D/H) -> (B, T, D)
        # 2. position-wise MLP
        return x + self.mlp["fc2"](self.act(self.mlp["fc1"](self.layer_norm2(x))))


class CLIPTextModel(ModelMixin):
    """CLIP text transformer with transformers' config keys and checkpoint layout."""

    weights_name = "model.safetensors"
    # keys transformers writes into text_encoder/config.json that change nothing at inference
    ignore_for_config = ("architectures", "model_type", "transformers_version", "torch_dtype",
                         "dtype", "attention_dropout", "dropout", "initializer_range",
                         "initializer_factor", "gradient_checkpointing", "use_cache",
                         "tie_word_embeddings")
    only_supported = {"hidden_act": set(ACTIVATIONS)}
    library = "transformers"
    with_projection = False

    @register_to_config
    def __init__(self, vocab_size: int = 49408, hidden_size: int = 512,
                 intermediate_size: int = 2048, num_hidden_layers: int = 12,
                 num_attention_heads: int = 8,
                 max_position_embeddings: int = 77, hidden_act: str = "quick_gelu",
                 layer_norm_eps: float = 1e-5, projection_dim: Optional[int] = 512,
                 bos_token_id: Optional[int] = 49406, eos_token_id: Optional[int] = 49407,
                 pad_token_id: Optional[int] = 1):
        super().__init__()  # refuses `only_supported` values: CLIP and SD 1.x use quick_gelu,
        # SD 2.x gelu
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} must be divisible by num_attention_heads "
                             f"{num_attention_heads}")
        D = hidden_size
        layers = [CLIPEncoderLayer(D, num_attention_heads, intermediate_size, hidden_act,
                                   layer_norm_eps) for _ in range(num_hidden_layers)]
        self.text_model = nn.ModuleDict(dict(
            embeddings=nn.ModuleDict(dict(
                token_embedding=nn.Embedding(vocab_size, D),
                position_embedding=nn.Embedding(max_position_embeddings, D))),
            encoder=nn.ModuleDict(dict(layers=nn.ModuleList(layers))),
            final_layer_norm=nn.LayerNorm(D, eps=layer_norm_eps),
        ))
        if self.with_projection:  # CLIPTextModelWithProjection
            self.text_projection = nn.Linear(D, projection_dim, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids=None, output_attentions: bool = False,
                output_hidden_states: bool = False, return_dict: bool = True
                ) -> CLIPTextModelOutput:
        """transformers' CLIPTextModel arguments, in its order; `return_dict=False` gives the
        tuple (last_hidden_state, pooler_output[, hidden_states])."""
        refuse("CLIPTextModel.forward", "positions are always 0..T-1 and attention maps are not "
               "returned", position_ids=position_ids, output_attentions=output_attentions)
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(f"input_ids has {T} tokens but this text encoder has only "
                             f"{self.config.max_position_embeddings} positions "
                             f"(max_position_embeddings); tokenize with truncation=True, "
                             f"max_length={self.config.max_position_embeddings}")
        tm = self.text_model
        # 1. token + position embeddings, x_0: (B, T) -> (B, T, D)
        positions = torch.arange(T, device=input_ids.device)
        x = tm.embeddings.token_embedding(input_ids) + tm.embeddings.position_embedding(positions)
        # 2. mask: token i sees tokens j <= i, and never padding (attention_mask == 0)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
        if attention_mask is not None:
            mask = mask & attention_mask.bool()[:, None, None, :]  # (B, 1, T, T)
        # 3. the transformer layers, keeping x_0 .. x_N if asked
        hidden_states = [x]
        for layer in tm.encoder.layers:
            x = layer(x, mask)
            hidden_states.append(x)
        last_hidden_state = tm.final_layer_norm(x)
        # 4. pool at the EOS token (the id-2 configs of early checkpoints: the largest id is EOS)
        if self.config.eos_token_id == 2:
            eos_position = input_ids.argmax(dim=-1)
        else:
            eos_position = (input_ids == self.config.eos_token_id).int().argmax(dim=-1)
        pooled = last_hidden_state[torch.arange(B, device=x.device), eos_position]
        output = CLIPTextModelOutput(last_hidden_state, pooled,
                                     tuple(hidden_states) if output_hidden_states else None)
        return output if return_dict else tuple(v for v in output if v is not None)

    # ----------------------------------------------------------------------------------------------
    # the token embedding table E_tok, as transformers exposes it (textual inversion adds rows)
    # ----------------------------------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value: nn.Embedding):
        """Swap in another table; config.vocab_size follows it, so a save loads back (transformers
        updates vocab_size in resize_token_embeddings only)."""
        self.text_model.embeddings["token_embedding"] = value
        config = FrozenConfig({**self.config, "vocab_size": value.num_embeddings})
        object.__setattr__(self, "_config", config)

    def resize_token_embeddings(self, new_num_tokens: Optional[int] = None) -> nn.Embedding:
        """E_tok with `new_num_tokens` rows, in place, as transformers: the same module and
        Parameter, the first rows kept, rows added at the end drawn from N(μ, 1e-9 Σ), μ and Σ the
        mean and covariance of the old rows (its `mean_resizing`). Same seed -> same rows."""
        embedding = self.get_input_embeddings()
        if new_num_tokens is None:
            return embedding
        old = embedding.weight.detach()
        V, D = old.shape
        # a new (randomly initialised) table, as transformers builds: a seed gives the same rows
        weight = nn.Embedding(new_num_tokens, D, dtype=old.dtype, device=old.device).weight.data
        if new_num_tokens > V:
            weight[V:] = mean_init_rows(old, new_num_tokens - V).to(old.dtype)
        weight[:min(V, new_num_tokens)] = old[:new_num_tokens]
        embedding.weight.data, embedding.num_embeddings = weight, new_num_tokens
        self.set_input_embeddings(embedding)  # config.vocab_size = new_num_tokens
        return embedding

    # ----------------------------------------------------------------------------------------------
    # transformers-compatible files
    # ----------------------------------------------------------------------------------------------
    def save_config(self, save_directory) -> Path:
        """Write config.json as transformers does, so `transformers.CLIPTextModel` can load it."""
        path = Path(save_directory) / self.config_name
        keys = {k: v for k, v in self.config.items() if not k.startswith("_")}  # no _class_name
        data = {"architectures": [type(self).__name__], "model_type": "clip_text_model", **keys}
        atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def convert_state_dict(cls, state: dict) -> dict:
        """Load an SD `text_encoder/` folder, or one saved by transformers 4.x, 5.x or ddlearn:
        transformers 5 saves without the `text_model.` prefix; old checkpoints carry
        position_ids."""
        top_level = ("text_model.", "text_projection.")
        state = {k if k.startswith(top_level) else f"text_model.{k}": v
                 for k, v in state.items()}
        state.pop("text_model.embeddings.position_ids", None)
        return state


def mean_init_rows(weight: torch.Tensor, n: int) -> torch.Tensor:
    """n new embedding rows near the mean of `weight` (V, D), as transformers'
    `_init_added_embeddings_weights_with_mean`: samples of N(μ, 1e-9 Σ), computed in float32."""
    weight = weight.float()
    mean = weight.mean(dim=0)  # μ: (D,)
    centred = weight - mean
    covariance = centred.T @ centred / weight.shape[0]  # Σ: (D, D)
    if torch.distributions.constraints.positive_definite.check(1e-9 * covariance).all():
        normal = torch.distributions.MultivariateNormal(mean, covariance_matrix=1e-9 * covariance)
        return normal.sample((n,))  # (n, D)
    return mean.expand(n, -1)  # (n, D)


class CLIPTextModelWithProjectionOutput(NamedTuple):
    text_embeds: torch.Tensor  # (B, projection_dim): the pooled EOS row, projected
    last_hidden_state: torch.Tensor  # (B, T, D)
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None  # N+1 tensors (B, T, D), if asked


class CLIPTextModelWithProjection(CLIPTextModel):
    """CLIPTextModel + CLIP's linear text projection of the pooled output (no bias), as
    transformers' class: what SD3 (`text_encoder`, `text_encoder_2`) and SDXL load."""

    with_projection = True  # CLIPTextModel.__init__ then adds `text_projection`

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids=None, output_attentions: bool = False,
                output_hidden_states: bool = False, return_dict: bool = True
                ) -> CLIPTextModelWithProjectionOutput:
        out = super().forward(input_ids, attention_mask, position_ids, output_attentions,
                              output_hidden_states)
        output = CLIPTextModelWithProjectionOutput(self.text_projection(out.pooler_output),
                                                   out.last_hidden_state, out.hidden_states)
        return output if return_dict else tuple(v for v in output if v is not None)
