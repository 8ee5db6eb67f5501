"""DiffusionPipeline: the glue that loads, saves and moves a set of components as one object.

Mirrors `diffusers.DiffusionPipeline`. A pipeline folder is the diffusers layout:

    model_index.json          {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
                               "scheduler": ["diffusers", "DDPMScheduler"]}
    unet/config.json + diffusion_pytorch_model.safetensors
    scheduler/scheduler_config.json

Each subclass lists its components as `__init__` arguments (`unet`, `scheduler`, `vae`,
`text_encoder`, `tokenizer`); `from_pretrained` builds each from its subfolder with the ddlearn
class of the same name (transformers' tokenizer for `tokenizer`), and `save_pretrained` writes a
folder diffusers can load back.
"""

import inspect
import json
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from ddlearn import models, schedulers
from ddlearn.config import FrozenConfig
from ddlearn.data.transforms import denormalize, numpy_to_pil, pt_to_numpy
from ddlearn.files import atomic_write_text
from ddlearn.hub import resolve_folder
from ddlearn.options import hub_options, refuse_unsupported, unexpected

# the diffusers version whose folder layout ddlearn writes (model_index.json's _diffusers_version)
DIFFUSERS_FORMAT = "0.30.0"
# diffusers pipelines may list these; ddlearn has no use for them and skips them with a note
SKIPPED_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder")


class ImagePipelineOutput(NamedTuple):
    images: object  # a list of PIL images, an (B, H, W, C) numpy array, or a (B, C, H, W) tensor


class DiffusionPipeline:
    """Base of every pipeline: from_pretrained, save_pretrained, to(), components, progress bar."""

    config_name = "model_index.json"

    def __init__(self, **components):
        for name, component in components.items():
            setattr(self, name, component)
        self._progress_bar_config = {}

    # ---- components ----------------------------------------------------------------------------
    @classmethod
    def component_names(cls) -> list:
        params = inspect.signature(cls.__init__).parameters
        return [n for n, p in params.items() if n != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]

    @property
    def components(self) -> dict:
        return {name: getattr(self, name) for name in self.component_names()}

    def _modules(self):
        return [c for c in self.components.values() if isinstance(c, torch.nn.Module)]

    @property
    def device(self) -> torch.device:
        return next(iter(self._modules())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self._modules())).dtype

    def to(self, *args, **kwargs):
        """Move every model: `pipe.to("cuda")`, `pipe.to(torch.float16)`, `pipe.to("cuda",
        torch.float16)`, or with `device=` / `dtype=`, as in diffusers. Returns the pipeline."""
        device = kwargs.pop("device", kwargs.pop("torch_device", None))
        dtype = kwargs.pop("dtype", kwargs.pop("torch_dtype", None))
        kwargs.pop("silence_dtype_warnings", None)
        if kwargs:
            raise unexpected(f"{type(self).__name__}.to", next(iter(kwargs)),
                             ["device", "dtype", "silence_dtype_warnings"])
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            elif isinstance(arg, (str, torch.device)):
                device = arg
            else:
                raise TypeError(f"{type(self).__name__}.to takes a device ('cpu', 'cuda', a "
                                f"torch.device) and/or a torch.dtype, not {arg!r}")
        for module in self._modules():
            module.to(device=device, dtype=dtype)
        return self

    # ---- config and printing -------------------------------------------------------------------
    @property
    def config(self) -> FrozenConfig:
        """What model_index.json holds: the class and, per component, [library, class name]."""
        index = {"_class_name": type(self).__name__, "_diffusers_version": DIFFUSERS_FORMAT}
        if getattr(self, "_name_or_path", None):
            index["_name_or_path"] = self._name_or_path
        for name, component in self.components.items():
            library = "transformers" if name.startswith(("tokenizer", "text_encoder")) \
                else "diffusers"
            index[name] = [None, None] if component is None else [library, type(component).__name__]
        return FrozenConfig(index)

    def __repr__(self):  # as diffusers prints a pipeline: its class and component table
        return f"{type(self).__name__} {json.dumps(self.config, indent=2, sort_keys=True)}\n"

    # ---- loading and saving --------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_repo_id, torch_dtype=None, use_safetensors=None,
                        variant=None, **kwargs):
        """Load every component listed in `model_index.json` (a local folder or a Hub id).

        Takes diffusers' arguments: `torch_dtype` (a dtype, or a dict by component name with an
        optional "default"), `use_safetensors`, `variant`, the Hub options of `ddlearn.options`,
        and components by name to use instead of loading them (`scheduler=DDIMScheduler()`,
        `safety_checker=None`)."""
        where = f"{cls.__name__}.from_pretrained"
        hub = hub_options(kwargs)
        refuse_unsupported(where, kwargs)
        kwargs.pop("requires_safety_checker", None)  # ddlearn pipelines have no safety checker
        declined = set()  # safety_checker=None and the like: not loaded, and no note about it
        for name in (n for n in SKIPPED_COMPONENTS if n in kwargs):
            if kwargs.pop(name) is not None:
                raise NotImplementedError(f"{where}: ddlearn pipelines have no {name}; pass "
                                          f"{name}=None or leave it out")
            declined.add(name)
        root = resolve_folder(path_or_repo_id, variant=variant, **hub)
        index_path = root / cls.config_name
        if not index_path.is_file():
            raise FileNotFoundError(f"{root} has no model_index.json; is it a pipeline folder? "
                                    f"(a single model loads with e.g. UNet2DModel.from_pretrained)")
        index = json.loads(index_path.read_text())
        pipeline_cls = cls._resolve_pipeline_class(index.get("_class_name"))
        names = pipeline_cls.component_names()
        given = {name: kwargs.pop(name) for name in names if name in kwargs}
        if kwargs:
            raise unexpected(where, next(iter(kwargs)), ["torch_dtype", "use_safetensors",
                                                         "variant", *names, *SKIPPED_COMPONENTS],
                             loading=True)
        skipped = [n for n in SKIPPED_COMPONENTS
                   if n in index and index[n][0] is not None and n not in declined]
        if skipped:
            warnings.warn(f"skipping {', '.join(skipped)}: ddlearn pipelines do not use them",
                          stacklevel=2)
        components = dict(given)
        for name in (n for n in names if n not in given):
            if name not in index:
                raise ValueError(f"model_index.json in {root} has no {name!r} entry, which "
                                 f"{pipeline_cls.__name__} needs (components: {', '.join(names)})")
            library, class_name = index[name]
            dtype = torch_dtype.get(name, torch_dtype.get("default")) \
                if isinstance(torch_dtype, dict) else torch_dtype
            components[name] = load_component(root, name, library, class_name, torch_dtype=dtype,
                                              use_safetensors=use_safetensors, variant=variant)
        pipeline = pipeline_cls(**components)
        pipeline._name_or_path = str(path_or_repo_id)
        return pipeline

    @classmethod
    def _resolve_pipeline_class(cls, class_name):
        if cls is not DiffusionPipeline or class_name is None:
            return cls
        import ddlearn.pipelines as pipelines

        found = getattr(pipelines, class_name, None)
        if found is None:
            raise ValueError(f"ddlearn has no pipeline {class_name!r}; load it with a ddlearn "
                             f"pipeline class directly, e.g. DDPMPipeline.from_pretrained")
        return found

    def save_pretrained(self, save_directory, safe_serialization: bool = True, variant=None,
                        max_shard_size=None, push_to_hub: bool = False) -> Path:
        """Write model_index.json and every component's folder, as diffusers lays them out."""
        refuse_unsupported(f"{type(self).__name__}.save_pretrained", {"push_to_hub": push_to_hub})
        root = Path(save_directory)
        for name, component in self.components.items():
            if isinstance(component, torch.nn.Module):
                component.save_pretrained(root / name, safe_serialization=safe_serialization,
                                          variant=variant, max_shard_size=max_shard_size)
            elif component is not None:  # a scheduler, or transformers' tokenizer
                component.save_pretrained(root / name)
        index = {k: v for k, v in self.config.items() if k != "_name_or_path"}
        atomic_write_text(root / self.config_name, json.dumps(index, indent=2) + "\n")
        return root

    # ---- progress bar and outputs --------------------------------------------------------------
    def set_progress_bar_config(self, **kwargs):
        """E.g. `pipe.set_progress_bar_config(disable=True)`; kwargs go to tqdm."""
        self._progress_bar_config = kwargs

    def progress_bar(self, iterable):
        return tqdm(iterable, **self._progress_bar_config)

    numpy_to_pil = staticmethod(numpy_to_pil)  # (B, H, W, C) in [0, 1] -> PIL, as diffusers

    def postprocess(self, image: torch.Tensor, output_type: str = "pil"):
        """(B, C, H, W) in [-1, 1] -> "pt" tensor in [0, 1], "np" (B, H, W, C) array, or PIL."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', not {output_type!r}")
        image = denormalize(image)
        if output_type == "pt":
            return image
        image = pt_to_numpy(image)
        return numpy_to_pil(image) if output_type == "pil" else image


def load_component(root: Path, name: str, library, class_name, torch_dtype=None,
                   use_safetensors=None, variant=None):
    """Build one component from `root/name` with the ddlearn (or transformers tokenizer) class."""
    if library is None:
        return None
    if class_name.endswith("Tokenizer") or class_name.endswith("TokenizerFast"):
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(root / name)
    cls = getattr(models, class_name, None) or getattr(schedulers, class_name, None)
    if cls is None:
        raise ValueError(f"{name}: ddlearn has no class {class_name!r} ({library}). Supported "
                         f"schedulers and models are listed in ddlearn.__all__")
    if issubclass(cls, torch.nn.Module):  # models and the text encoder: weights, maybe a dtype
        return cls.from_pretrained(root, subfolder=name, torch_dtype=torch_dtype,
                                   use_safetensors=use_safetensors, variant=variant)
    return cls.from_pretrained(root, subfolder=name)  # schedulers: a config only
