"""One way to draw Gaussian noise, everywhere: exactly as diffusers' `randn_tensor` does.

Same seed, same numbers as diffusers: the noise is drawn on the generator's device (a CPU generator
gives the same numbers on every machine), with one generator per sample when a list is given, then
moved to where it is needed. Pipelines draw x_T with it; stochastic schedulers draw their step
noise.
"""

import torch


def randn_tensor(shape, generator=None, device=None, dtype=None) -> torch.Tensor:
    """Gaussian noise drawn as diffusers draws it: on the generator's device, one generator per
    sample when a list is given, then moved to `device`."""
    device = torch.device(device or "cpu")
    if isinstance(generator, list) and len(generator) == 1:
        generator = generator[0]
    if isinstance(generator, list):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; pass one "
                             f"generator, or one per image")
        rand_device = generator[0].device
        samples = [torch.randn((1, *shape[1:]), generator=g, device=rand_device, dtype=dtype)
                   for g in generator]
        return torch.cat(samples).to(device)
    rand_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=rand_device, dtype=dtype).to(device)
