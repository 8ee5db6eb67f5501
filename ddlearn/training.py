"""The training loop chapter 04 teaches: noise an image, predict the noise, regress, repeat.

DDPM training (Ho et al. 2020, Algorithm 1), as in diffusers' train_unconditional.py example:

    x_0 ~ data,  t ~ U{0..T-1},  ε ~ N(0, I)
    x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε              (scheduler.add_noise, eq. 4)
    loss = ‖ε - ε_θ(x_t, t)‖²                (eq. 14; or v / x_0 targets, see `target_for`)

optionally weighted per image by Min-SNR-γ (`weighting="min_snr"`, train_text_to_image.py's
`--snr_gamma`). Around that step, what a real run needs and nothing more: AdamW, an exponential
moving average of the weights (EMA), a loss log, atomic checkpoints, and resuming from the last
one. Every batch and noise draw comes from a generator seeded by (seed, step), so a resumed run
continues exactly where it stopped (same batches, same noise) instead of restarting. Several GPUs:
pass an `accelerate.Accelerator` (see scripts/train_ddpm_butterflies.py); each takes its slice.

References: Ho et al. 2020, "Denoising Diffusion Probabilistic Models"; Salimans & Ho 2022,
"Progressive Distillation" (v-prediction); Hang et al. 2023, "Efficient Diffusion Training via
Min-SNR Weighting Strategy"; Esser et al. 2024, "Scaling Rectified Flow Transformers" §3.1.
"""

import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ddlearn.files import atomic_write, atomic_write_text
from ddlearn.models.weights import save_weights


# --------------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------------
def target_for(scheduler, x_0, noise, t) -> torch.Tensor:
    """What the network regresses on, by `scheduler.config.prediction_type`."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":  # v = √ᾱ_t ε - √(1-ᾱ_t) x_0 (Salimans & Ho 2022)
        return scheduler.get_velocity(x_0, noise, t)
    if kind == "sample":
        return x_0
    raise ValueError(f"unknown prediction_type {kind!r}")


def sample_timesteps(batch_size, num_train_timesteps, generator, distribution="uniform"):
    """t for each image: "uniform" over 0..T-1 (DDPM), or "logit_normal" (more mid-range t,
    Esser et al. 2024 §3.1): less effort on the nearly clean and nearly pure-noise ends."""
    if distribution == "uniform":
        return torch.randint(0, num_train_timesteps, (batch_size,), generator=generator)
    if distribution == "logit_normal":
        u = torch.sigmoid(torch.randn(batch_size, generator=generator))
        return (u * (num_train_timesteps - 1)).round().long()
    raise ValueError(f"unknown timestep distribution {distribution!r}: 'uniform' or 'logit_normal'")


def min_snr_weights(scheduler, t, snr_gamma=5.0) -> torch.Tensor:
    """Per-image loss weights of Min-SNR-γ (Hang et al. 2023): the x_0-error weight min(SNR_t, γ),
    SNR_t = ᾱ_t / (1-ᾱ_t), rewritten for the target the network regresses on."""
    alpha_bar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    clipped = snr.clamp(max=snr_gamma)
    kind = scheduler.config.prediction_type
    # ‖ε - ε̂‖² = SNR ‖x_0 - x̂_0‖², ‖v - v̂‖² = (SNR + 1) ‖x_0 - x̂_0‖²
    return {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1), "sample": clipped}[kind]


def diffusion_loss(unet, scheduler, x_0, generator, weighting=None, snr_gamma=5.0,
                   timestep_distribution="uniform", **unet_kwargs):
    """One DDPM training loss on a batch of clean images (or latents) x_0 in [-1, 1].

    weighting=None: the plain MSE over every pixel of the batch (Ho et al. 2020, eq. 14).
    weighting="min_snr": each image's MSE times `min_snr_weights(scheduler, t, snr_gamma)`, so
    the easy, nearly clean timesteps stop dominating the gradient (Hang et al. 2023).
    Both draw the same noise and t from `generator`."""
    if weighting not in (None, "min_snr"):
        raise ValueError(f"unknown weighting {weighting!r}: None (plain MSE) or 'min_snr'")
    noise = torch.randn(x_0.shape, generator=generator).to(x_0.device, x_0.dtype)
    t = sample_timesteps(x_0.shape[0], scheduler.config.num_train_timesteps, generator,
                         timestep_distribution).to(x_0.device)
    x_t = scheduler.add_noise(x_0, noise, t)
    prediction = unet(x_t, t, **unet_kwargs).sample.float()
    target = target_for(scheduler, x_0, noise, t).float()
    if weighting is None:
        return F.mse_loss(prediction, target)
    per_image = F.mse_loss(prediction, target, reduction="none").flatten(1).mean(1)
    return (min_snr_weights(scheduler, t, snr_gamma).float() * per_image).mean()


# --------------------------------------------------------------------------------------------------
# EMA and deterministic batches
# --------------------------------------------------------------------------------------------------
class EMA:
    """θ_ema ← d θ_ema + (1 - d) θ, with the warm-up d_k = min(decay, (1 + k) / (10 + k))."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay, self.num_updates = decay, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module):
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - d)


def batch_indices(num_items, batch_size, step, seed) -> torch.Tensor:
    """Indices of the batch for `step`: epoch-wise shuffles seeded by (seed, epoch), so any step's
    batch can be recomputed after a restart."""
    per_epoch = max(num_items // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    shuffle = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_items, generator=shuffle)
    return order[position * batch_size:(position + 1) * batch_size]


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------
def train(model, loss_fn, dataset, *, num_steps, batch_size=32, lr=1e-3, weight_decay=0.0,
          ema_decay=None, output_dir=None, save_every=None, seed=0, max_grad_norm=1.0,
          warmup_steps=0, accelerator=None, progress=True, max_seconds=None):
    """Minimise `loss_fn(model, batch, generator)` over batches of `dataset` (indexable, or a
    tensor).

    Returns {"losses": [...], "model": model, "ema": EMA or None}. With `output_dir`, a checkpoint
    is written every `save_every` steps and at the end, and a rerun resumes from the latest one.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warmup = lambda s: min(1.0, (s + 1) / max(warmup_steps, 1))  # linear warm-up, then constant
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)
    ema = EMA(model, ema_decay) if ema_decay else None
    state = {"step": 0, "losses": []}
    if output_dir is not None and latest_checkpoint(output_dir) is not None:
        state = load_checkpoint(latest_checkpoint(output_dir), model, optimizer, schedule, ema)
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)

    model.train()
    start = time.monotonic()
    bar = tqdm(range(state["step"], num_steps), initial=state["step"], total=num_steps,
               disable=not progress or rank != 0)
    for step in bar:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step * world + rank)
        indices = batch_indices(len(dataset), batch_size * world, step, seed)[rank::world]
        batch = collate(dataset, indices)
        loss = loss_fn(model, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss) if accelerator else loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.update(model)
        state["losses"].append(loss.item())
        state["step"] = step + 1
        bar.set_postfix(loss=f"{sum(state['losses'][-20:]) / len(state['losses'][-20:]):.4f}")
        out_of_time = max_seconds is not None and time.monotonic() - start > max_seconds
        due = state["step"] == num_steps or out_of_time or \
            (save_every and state["step"] % save_every == 0)
        if output_dir is not None and rank == 0 and due:
            unwrapped = accelerator.unwrap_model(model) if accelerator else model
            save_checkpoint(output_dir, unwrapped, optimizer, schedule, ema, state)
        if out_of_time:
            break
    return {"losses": state["losses"], "model": model, "ema": ema}


def collate(dataset, indices):
    if isinstance(dataset, torch.Tensor):
        return dataset[indices]
    items = [dataset[int(i)] for i in indices]
    if isinstance(items[0], dict):
        return {k: torch.stack([it[k] for it in items]) if torch.is_tensor(items[0][k])
                else [it[k] for it in items] for k in items[0]}
    return torch.stack(items)


# --------------------------------------------------------------------------------------------------
# Checkpoints: output_dir/checkpoints/step-000100/{model,ema}.safetensors, optimizer.pt, state.json
# --------------------------------------------------------------------------------------------------
def save_checkpoint(output_dir, model, optimizer, schedule, ema, state) -> Path:
    root = Path(output_dir) / "checkpoints"
    folder = root / f"step-{state['step']:06d}"
    save_weights(folder / "model.safetensors", model.state_dict())
    if ema is not None:
        save_weights(folder / "ema.safetensors", ema.model.state_dict())
    # optimizer state is tensors and numbers only, so it reloads with torch.load(weights_only=True)
    extra = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}
    atomic_write(folder / "optimizer.pt", lambda tmp: torch.save(extra, tmp))
    meta = {**state, "ema_updates": ema.num_updates if ema else 0}
    atomic_write_text(folder / "state.json", json.dumps(meta))
    atomic_write_text(root / "latest", folder.name)  # written last: points only at complete folders
    return folder


def latest_checkpoint(output_dir):
    pointer = Path(output_dir) / "checkpoints" / "latest"
    return pointer.parent / pointer.read_text().strip() if pointer.is_file() else None


def load_checkpoint(folder, model, optimizer=None, schedule=None, ema=None) -> dict:
    folder = Path(folder)
    model.load_state_dict(load_file(folder / "model.safetensors"))
    if ema is not None and (folder / "ema.safetensors").exists():
        ema.model.load_state_dict(load_file(folder / "ema.safetensors"))
    state = json.loads((folder / "state.json").read_text())
    if ema is not None:
        ema.num_updates = state.pop("ema_updates", 0)
    if optimizer is not None:
        extra = torch.load(folder / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(extra["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(extra["schedule"])
    return {"step": state["step"], "losses": state["losses"]}
