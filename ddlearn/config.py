"""Configs the diffusers way: constructor arguments recorded into a frozen, JSON-saveable `config`.

Mirrors `diffusers.configuration_utils.ConfigMixin` in ~150 lines. A class opts in by decorating
its `__init__` with `@register_to_config`; every argument, given or defaulted, lands in
`self.config`:

    class DDIMScheduler(ConfigMixin):
        config_name = "scheduler_config.json"

        @register_to_config
        def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, ...): ...

    s = DDIMScheduler(beta_start=0.00085)
    s.config.beta_start, s.config["beta_start"]          # read by attribute or by key
    DDIMScheduler.from_config(s.config, eta=0.5)          # rebuild, optionally overriding keys
    s.save_config("out/")                                 # -> out/scheduler_config.json

The JSON is the one diffusers writes: the arguments plus `_class_name`. On reading, keys starting
with `_` (`_diffusers_version`, `_class_name`, ...) are dropped, unknown keys are ignored with one
warning that names them, and a missing required key or a value of the wrong type is a ValueError
naming it.
"""

import functools
import inspect
import json
import typing
import warnings
from pathlib import Path

from ddlearn.files import atomic_write_text


class FrozenConfig(dict):
    """A read-only dict whose keys are also attributes: `config.beta_start`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def _frozen(self, *args, **kwargs):
        raise TypeError("config is frozen; build a new object with "
                        "`Cls.from_config(config, key=value)`")

    def __eq__(self, other):  # bookkeeping (which keys were defaulted) is not part of the value
        strip = lambda c: {k: v for k, v in dict(c).items() if k != "_use_default_values"}
        return isinstance(other, dict) and strip(self) == strip(other)

    __hash__ = None

    def __reduce_ex__(self, protocol):  # copy.deepcopy and pickle rebuild it from a plain dict
        return (FrozenConfig, (dict(self),))

    __setitem__ = __delitem__ = __setattr__ = update = pop = popitem = clear = setdefault = _frozen


def register_to_config(init):
    """Decorator for `__init__`: record every argument, defaults included, into `self.config`."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        # `Cls(**other.config)` passes bookkeeping keys too (`_class_name`, `_use_default_values`,
        # ...): diffusers' constructors ignore them, and so do these
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
        bound = signature.bind(self, *args, **kwargs)
        given = set(bound.arguments)
        bound.apply_defaults()
        values = {k: v for k, v in bound.arguments.items() if k != "self"}
        _check_types(type(self), values)
        # JSON has no tuples: store lists so a saved-then-loaded config compares equal
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        # `_class_name` travels with the config, so `Other.from_config(config)` knows its source
        # and so does the list of keys left at their defaults: another class keeps its own defaults
        # for those (diffusers' `_use_default_values`: Heun built from DDPM's config keeps Heun's
        # beta_start unless DDPM's was set explicitly)
        defaulted = sorted(k for k in values if k not in given)
        values = {"_class_name": type(self).__name__, **values, "_use_default_values": defaulted}
        object.__setattr__(self, "_config", FrozenConfig(values))
        init(self, *args, **kwargs)

    return wrapper


class ConfigMixin:
    """Gives a class `config`, `from_config`, `save_config` and `load_config`.

    Subclasses set `config_name` (the JSON file name) and may list `ignore_for_config` keys that
    are expected in files written by other tools (transformers' `architectures`, ...) and dropped
    silently.
    """

    config_name = "config.json"
    ignore_for_config: tuple = ()

    @property
    def config(self) -> FrozenConfig:
        if not hasattr(self, "_config"):
            raise AttributeError(f"{type(self).__name__}.__init__ is not decorated with "
                                 "@register_to_config")
        return self._config

    @classmethod
    def from_config(cls, config, **overrides):
        """Build an instance from a config: a dict, a FrozenConfig, or a folder holding the JSON."""
        if isinstance(config, (str, Path)):
            config = cls.load_config(config)
        instance = cls(**cls.extract_init_kwargs(config, **overrides))
        # keys set in the source that this class does not take stay in its config, unused
        # (diffusers' "hidden" keys), so A -> B -> C swaps still hand A's settings to C: SD's
        # clip_sample=False survives a detour through Euler on its way to DDIM
        defaulted = set(dict(config).get("_use_default_values", ()))
        hidden = {k: v for k, v in dict(config).items()
                  if k not in instance.config and k not in defaulted and not k.startswith("_")}
        if hidden:
            object.__setattr__(instance, "_config", FrozenConfig({**instance.config, **hidden}))
        return instance

    @classmethod
    def extract_init_kwargs(cls, config, **overrides) -> dict:
        """Keep the keys `__init__` takes; warn once about the rest; check required keys exist."""
        params = init_parameters(cls)
        config = {**dict(config), **overrides}
        source = config.get("_class_name", cls.__name__)
        # keys a compatible class takes (DDPM's variance_type kept by a DDIM swapped in for it)
        # are diffusers' "hidden" keys: kept silently, as diffusers does
        known = set(params).union(*(init_parameters(c) for c in cls.compatible_classes()))
        unknown = sorted(k for k in config if k not in known and not k.startswith("_")
                         and k not in cls.ignore_for_config)
        if unknown and source == cls.__name__:
            # same class, keys no compatible class knows: most likely from a newer diffusers
            warnings.warn(f"{cls.__name__}: ignoring config keys it does not implement: "
                          f"{', '.join(unknown)}", stacklevel=3)
        # (a config of another class, e.g. DDPM's when swapping schedulers, is expected to differ)
        if source != cls.__name__:
            defaulted = set(config.get("_use_default_values", ())) - set(overrides)
            config = {k: v for k, v in config.items() if k not in defaulted}
        kwargs = {k: v for k, v in config.items() if k in params}
        required = [k for k, p in params.items() if p.default is inspect.Parameter.empty]
        missing = [k for k in required if k not in kwargs]
        if missing:
            raise ValueError(f"{cls.__name__} config is missing required key(s): "
                             f"{', '.join(missing)}")
        return kwargs

    @classmethod
    def compatible_classes(cls) -> tuple:
        """Classes whose configs this one can be built from (schedulers: every scheduler)."""
        return ()

    def to_json_string(self) -> str:
        """The config as diffusers writes it: the arguments plus `_class_name`, keys sorted."""
        data = {k: v for k, v in self.config.items() if k != "_use_default_values"}
        data["_class_name"] = type(self).__name__
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def __repr__(self):  # diffusers prints a scheduler as its class name and JSON config
        return f"{type(self).__name__} {self.to_json_string()}"

    def save_config(self, save_directory) -> Path:
        """Write `<save_directory>/<config_name>` atomically; returns its path."""
        path = Path(save_directory) / self.config_name
        atomic_write_text(path, self.to_json_string())
        return path

    @classmethod
    def load_config(cls, directory) -> dict:
        """Read `<directory>/<config_name>` (or a JSON file given directly) into a plain dict."""
        path = Path(directory)
        if path.is_dir():
            path = path / cls.config_name
        if not path.is_file():
            raise FileNotFoundError(f"{cls.__name__}: no {cls.config_name} in {Path(directory)}; "
                                    f"save one with `.save_config(dir)` or pass the right folder")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); "
                             f"re-save it or download it again") from None


# --------------------------------------------------------------------------------------------------
# Type checking of config values against the `__init__` annotations
# --------------------------------------------------------------------------------------------------
def init_parameters(cls) -> dict:
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    return {k: p for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _check_types(cls, values: dict):
    hints = typing.get_type_hints(inspect.unwrap(cls.__init__))
    for name, value in values.items():
        if name in hints and not _matches(value, hints[name]):
            expected = _type_name(hints[name])
            raise ValueError(f"{cls.__name__}: config key {name!r} should be {expected}, "
                             f"got {value!r} ({type(value).__name__})")


def _matches(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is float:  # an int is a fine float (beta_end=1)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list) or hint in (tuple, list):
        # JSON gives lists where Python code wrote tuples; accept either
        return isinstance(value, (tuple, list))
    if origin is typing.Literal:
        return value in args
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
