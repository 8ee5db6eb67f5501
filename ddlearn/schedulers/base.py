"""`SchedulerMixin`, the one base class of every scheduler: its config, and how it loads and saves.

Mirrors `diffusers.SchedulerMixin` + `ConfigMixin`: `config`, `from_config`, `from_pretrained`,
`save_pretrained`, `compatibles`, `len(scheduler)`, `set_begin_index`, `get_velocity`. Nothing a
sampler computes lives here: each scheduler's file holds its own `set_timesteps`,
`scale_model_input`, `step` and `add_noise`, on the functions of `common.py`.

Reference: diffusers `schedulers/scheduling_utils.py`.
"""

from pathlib import Path

import torch

from ddlearn.config import ConfigMixin, init_parameters
from ddlearn.hub import resolve_folder
from ddlearn.options import hub_options, refuse_unsupported, unexpected
from ddlearn.schedulers import common
from ddlearn.schedulers.common import alpha_bar_coefficients


class SchedulerMixin(ConfigMixin):
    """Shared contract of the schedulers; each sets `alphas_cumprod` and `timesteps`."""

    config_name = "scheduler_config.json"
    order = 1  # model calls per step (Heun: 2)
    num_inference_steps = None  # until set_timesteps
    step_index = None  # the stateful samplers' position in `timesteps`
    begin_index = None  # where a pipeline starts the loop (img2img), if it says
    compatible_family = "ddpm"  # schedulers of one family can be built from each other's config

    def __len__(self):
        return self.config.num_train_timesteps

    def set_begin_index(self, begin_index: int = 0):
        """Start the next loop at `timesteps[begin_index]` (img2img: after the skipped steps)."""
        self.begin_index = begin_index

    def index_for_timestep(self, timestep, schedule_timesteps=None) -> int:
        """Where `timestep` sits in the schedule (the 2nd match if it appears twice)."""
        return common.index_for_timestep(
            self.timesteps if schedule_timesteps is None else schedule_timesteps, timestep)

    def get_velocity(self, sample, noise, timesteps) -> torch.Tensor:
        """v-prediction target (Salimans & Ho 2022, §4): v = √ᾱ_t ε - √(1-ᾱ_t) x_0."""
        alpha_t, sigma_t = alpha_bar_coefficients(self.alphas_cumprod, timesteps, sample)
        return alpha_t * noise - sigma_t * sample

    def _register(self, **changes):
        """Rewrite config keys in __init__, as diffusers' `register_to_config(key=value)` does
        (DPM-Solver records algorithm_type="deis" as "dpmsolver++")."""
        object.__setattr__(self, "_config", type(self.config)({**self.config, **changes}))

    def _only_default(self, *names):
        """NotImplementedError for a diffusers option ddlearn has only at its default value."""
        defaults = init_parameters(type(self))
        for name in names:
            value, default = self.config[name], defaults[name].default
            if value != default and not (isinstance(value, list) and list(default) == value):
                raise NotImplementedError(
                    f"{type(self).__name__}({name}={value!r}) is a diffusers option ddlearn "
                    f"implements only at its default, {name}={default!r}")

    @classmethod
    def from_pretrained(cls, path_or_repo_id, subfolder=None, return_unused_kwargs=False,
                        **kwargs):
        """Read `scheduler_config.json` from a folder or a Hub id, as diffusers does, e.g.
        `DDIMScheduler.from_pretrained(model_id, subfolder="scheduler")`. Hub options go to
        huggingface_hub; other keywords override config keys (`timestep_spacing="trailing"`)."""
        where = f"{cls.__name__}.from_pretrained"
        hub = hub_options(kwargs)
        refuse_unsupported(where, kwargs)
        for name in kwargs:
            if name not in init_parameters(cls):
                raise unexpected(where, name, ["subfolder", "return_unused_kwargs",
                                               *init_parameters(cls)], loading=True)
        folder = resolve_folder(path_or_repo_id, subfolder, **hub)
        scheduler = cls.from_config(cls.load_config(folder), **kwargs)
        return (scheduler, {}) if return_unused_kwargs else scheduler

    def save_pretrained(self, save_directory, push_to_hub: bool = False) -> Path:
        """Write `<save_directory>/scheduler_config.json` (atomically); returns its path."""
        refuse_unsupported(f"{type(self).__name__}.save_pretrained", {"push_to_hub": push_to_hub})
        return self.save_config(save_directory)

    @classmethod
    def compatible_classes(cls) -> tuple:
        """Every ddlearn scheduler of this one's family (the DDPM-trained samplers; each flow
        matching one is its own, as in diffusers): any of them can be built from another's
        config."""
        found, todo = [], [SchedulerMixin]
        while todo:
            subclasses = todo.pop().__subclasses__()
            found += [c for c in subclasses if "step" in vars(c)
                      and c.compatible_family == cls.compatible_family]
            todo += subclasses
        return tuple(found)

    @property
    def compatibles(self) -> list:
        """The schedulers that can be built from this one's config, itself included (as in
        diffusers): `pipe.scheduler = Other.from_config(pipe.scheduler.config)`."""
        return list(self.compatible_classes())
