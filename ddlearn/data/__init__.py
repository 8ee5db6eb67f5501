"""Data: synthetic butterflies, the Smithsonian subset when online, exact-score 2-D toys, and the
checkpoints shipped in the repository's data/models/.

The butterflies' names are importable from here too (`from ddlearn.data import make_butterfly`);
they live in ddlearn/data/butterflies/ (drawing.py: seed -> image; datasets.py: the datasets).
"""

from pathlib import Path

# The repository's data/ folder (shipped checkpoints in data/models/, figures in data/figures/)
# travels inside the installed package as ddlearn/data/shipped/ (setup.py copies it into the
# wheel: `pip install`, `pip install git+URL`, Colab). In a clone or an editable install it is
# read in place, beside the package.
_INSTALLED, _CLONE = (Path(__file__).resolve().parent / "shipped",
                      Path(__file__).resolve().parents[2] / "data")
DATA_ROOT = _INSTALLED if (_INSTALLED / "models").is_dir() else _CLONE


def shipped_model(name: str) -> Path:
    """The folder of a checkpoint shipped with ddlearn (data/models/<name>), whatever the current
    directory and however ddlearn was installed."""
    folder = DATA_ROOT / "models" / name
    if not folder.is_dir():
        models = DATA_ROOT / "models"
        found = sorted(p.name for p in models.iterdir() if p.is_dir()) if models.is_dir() else []
        raise FileNotFoundError(
            f"no shipped model {name!r} in {models} (shipped: {', '.join(found) or 'none'}); "
            f"reinstall ddlearn with pip (the wheel carries data/), or work in a clone with "
            f"`pip install -e .`")
    return folder


from ddlearn.data.butterflies import *  # noqa: E402,F403
from ddlearn.data.butterflies import __all__ as _butterflies  # noqa: E402

__all__ = ["DATA_ROOT", "shipped_model", *_butterflies]
