"""The training loop chapter 04 teaches: noise an image, predict the noise, regress, repeat.

`train(model, loss_fn, dataset, ...)` minimises a loss from losses.py (`diffusion_loss`,
`flow_matching_loss`) or your own `loss_fn(model, batch, generator)`. Around that step, what a
real run needs and nothing more: AdamW, an exponential moving average of the weights (EMA), a
loss log, atomic checkpoints, and resuming from the last one. Every batch and noise draw comes
from a generator seeded by (seed, step), so a resumed run continues exactly where it stopped
(same batches, same noise) instead of restarting. Several GPUs: pass an `accelerate.Accelerator`
(see scripts/train_ddpm_butterflies.py); each process takes its slice.

References: Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Algorithm 1; diffusers'
examples/unconditional_image_generation/train_unconditional.py (AdamW, EMA, checkpoints).
"""

import copy
import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ddlearn.files import atomic_write, atomic_write_text
from ddlearn.models.weights import save_weights


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
          warmup_steps=0, lr_schedule="constant", accelerator=None, progress=True,
          max_seconds=None):
    """Minimise `loss_fn(model, batch, generator)` over batches of `dataset` (indexable, or a
    tensor).

    The learning rate rises linearly over `warmup_steps`, then stays ("constant") or follows a
    half cosine to 0 ("cosine") over the run: over `num_steps`, or over `max_seconds` of wall
    time when that comes first, so a time-budgeted run ends at lr 0 whatever its speed.

    Returns {"losses": [...], "model": model, "ema": EMA or None}. With `output_dir`, a checkpoint
    is written every `save_every` steps and at the end, and a rerun resumes from the latest one.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}: 'constant' or 'cosine'")
    start = time.monotonic()

    def lr_factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if lr_schedule == "constant":
            return 1.0
        # the share of the run behind us, after the warm-up: in steps, or in seconds
        done = (step - warmup_steps) / max(num_steps - warmup_steps, 1)
        if max_seconds is not None:
            done = max(done, (time.monotonic() - start) / max_seconds)
        return 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    ema = EMA(model, ema_decay) if ema_decay else None
    state = {"step": 0, "losses": []}
    if output_dir is not None and latest_checkpoint(output_dir) is not None:
        state = load_checkpoint(latest_checkpoint(output_dir), model, optimizer, schedule, ema)
    if accelerator is not None:
        model, optimizer = accelerator.prepare(model, optimizer)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)

    model.train()
    start = time.monotonic()  # again: loading the checkpoint is not training time
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
