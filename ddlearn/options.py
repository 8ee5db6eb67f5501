"""The keyword arguments diffusers' `from_pretrained` and `save_pretrained` take, sorted three ways.

A learner pastes `UNet2DModel.from_pretrained(repo, subfolder="unet", use_safetensors=True)` from a
diffusers tutorial; ddlearn must run it and give the same model. Every such argument is one of:

- **a Hub option** (`revision`, `cache_dir`, `token`, ...): handed to huggingface_hub when the
  checkpoint is a Hub id; a local folder needs none of them, as in diffusers;
- **honoured by the loader itself** (`torch_dtype`, `use_safetensors`, `variant`, ...; see
  `ddlearn.models.modeling` and `ddlearn.pipelines.pipeline`), or accepted because it cannot change
  the result (`low_cpu_mem_usage`: ddlearn never holds two copies of the weights);
- **not implemented** (`device_map`, `quantization_config`, ...): `NotImplementedError` naming it,
  never silently ignored. Anything else is a typo: a `TypeError` that lists what is accepted.

References: diffusers `ModelMixin.from_pretrained`, `DiffusionPipeline.from_pretrained`,
`SchedulerMixin.from_pretrained` (their docstrings list these arguments).
"""

import difflib

#: passed on to `huggingface_hub.snapshot_download` for a Hub id (`use_auth_token` is `token`'s
#: old name; `resume_download` is what every download does today)
HUB_OPTIONS = ("cache_dir", "revision", "force_download", "local_files_only", "token",
               "use_auth_token", "proxies", "resume_download")

#: accepted with any value: it cannot change what ddlearn loads
NO_EFFECT = ("low_cpu_mem_usage",)

#: diffusers features ddlearn does not have; None/False (their defaults) are fine
NOT_IMPLEMENTED = {
    "device_map": "load on the CPU, then move with `.to(device)`",
    "max_memory": "load on the CPU, then move with `.to(device)`",
    "offload_folder": "load on the CPU, then move with `.to(device)`",
    "offload_state_dict": "load on the CPU, then move with `.to(device)`",
    "quantization_config": "ddlearn models run in float32, float16 or bfloat16 (`torch_dtype`)",
    "ignore_mismatched_sizes": "checkpoint and config must match; ddlearn names every mismatch",
    "custom_pipeline": "use a ddlearn pipeline class, or write the loop yourself (chapter 02)",
    "dduf_file": "save the pipeline as a folder (`save_pretrained`) and load that",
    "from_flax": "ddlearn reads PyTorch checkpoints (safetensors)",
    "push_to_hub": "save locally, then upload with `huggingface-cli upload`",
}


def hub_options(kwargs: dict) -> dict:
    """Pop the Hub options out of `kwargs` (in place) and return them for huggingface_hub."""
    hub = {name: kwargs.pop(name) for name in HUB_OPTIONS if name in kwargs}
    if "use_auth_token" in hub:
        hub.setdefault("token", hub.pop("use_auth_token"))
    hub.pop("resume_download", None)
    return hub


def refuse_unsupported(where: str, kwargs: dict):
    """Pop the accepted no-effect options; raise NotImplementedError for a set unsupported one."""
    for name in NO_EFFECT:
        kwargs.pop(name, None)
    for name, advice in NOT_IMPLEMENTED.items():
        refuse(where, advice, **{name: kwargs.pop(name, None)})


def refuse(where: str, advice: str, **options):
    """NotImplementedError naming the first option set to anything but None, False or empty."""
    for name, value in options.items():
        if value is None or value is False or (isinstance(value, (dict, list, tuple))
                                               and not value):
            continue
        shown = f"={value!r}" if isinstance(value, (str, int, float)) else ""
        raise NotImplementedError(f"{where}: {name}{shown} is a diffusers feature ddlearn does "
                                  f"not implement; {advice}")


def unexpected(where: str, name: str, accepted, loading: bool = False) -> TypeError:
    """The error for a keyword nobody takes, with the closest accepted name if there is one
    (`loading`: a from_pretrained, which also takes the Hub options)."""
    accepted = sorted(set(accepted) | (set(HUB_OPTIONS) | set(NO_EFFECT) if loading else set()))
    close = difflib.get_close_matches(name, accepted, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return TypeError(f"{where} got an unexpected keyword argument {name!r}; {hint}it accepts "
                     f"{', '.join(accepted)}")
