"""ddlearn vs diffusers UNet2DModel: forward and training-step time, same config, same weights.

The model is the course's 32 px butterflies UNet (block_out_channels (64, 128, 128, 256), attention
at the two coarsest levels). A training step is what `ddlearn.training` does: forward, MSE against
the noise, backward, AdamW step. The two libraries run alternately (ours first on even rounds,
diffusers first on odd ones) so that load from other processes hits both alike; the table shows
the median of each and the ratio ddlearn / diffusers (below 1: ddlearn is faster).

    python benchmarks/models.py                      # CPU, batch 32 and 64
    python benchmarks/models.py --device cuda --repeats 20
"""

import argparse
import statistics
import time

import diffusers
import torch
import torch.nn.functional as F

from ddlearn.models.unet_2d import UNet2DModel

BUTTERFLIES = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                   block_out_channels=(64, 128, 128, 256),
                   down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                                     "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def forward(model, x, t, noise):
    with torch.no_grad():
        return model(x, t).sample


def make_train_step(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step(model, x, t, noise):
        loss = F.mse_loss(model(x, t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return train_step


def timed(fn, model, inputs, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(model, *inputs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare(models: dict, task: str, batch: int, repeats: int, device) -> dict:
    """Median seconds per call for each model, alternating which one runs first."""
    g = torch.Generator().manual_seed(batch)
    inputs = [torch.randn(batch, 3, 32, 32, generator=g).to(device),
              torch.randint(0, 1000, (batch,), generator=g).to(device),
              torch.randn(batch, 3, 32, 32, generator=g).to(device)]
    fns = {}
    for name, model in models.items():
        model.train(task == "train step")
        fns[name] = forward if task == "forward" else make_train_step(model)
        fns[name](model, *inputs)  # warm-up (allocator, cuDNN / oneDNN kernel choice)
    times = {name: [] for name in models}
    for r in range(repeats):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for name in order:
            times[name].append(timed(fns[name], models[name], inputs, device))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    reference = diffusers.UNet2DModel(**BUTTERFLIES)
    ours = UNet2DModel(**BUTTERFLIES)
    ours.load_state_dict(reference.state_dict(), strict=True)
    models = {"ddlearn": ours.to(device), "diffusers": reference.to(device)}
    params = sum(p.numel() for p in ours.parameters()) / 1e6

    print(f"UNet2DModel, butterflies 32 px config ({params:.1f} M parameters), device {device}, "
          f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{torch.get_num_threads()} CPU threads, median of {args.repeats}")
    print(f"| {'task':<10} | {'batch':>5} | {'ddlearn s':>9} | {'diffusers s':>11} | "
          f"{'ratio':>5} |")
    print(f"|{'-' * 12}|{'-' * 6}:|{'-' * 10}:|{'-' * 12}:|{'-' * 6}:|")
    for task in ("forward", "train step"):
        for batch in args.batches:
            t = compare(models, task, batch, args.repeats, device)
            print(f"| {task:<10} | {batch:>5} | {t['ddlearn']:>9.4f} | {t['diffusers']:>11.4f} | "
                  f"{t['ddlearn'] / t['diffusers']:>5.2f} |", flush=True)


if __name__ == "__main__":
    main()
