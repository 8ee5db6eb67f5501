"""Data: synthetic butterflies, the Smithsonian subset when online, exact-score 2-D toys, and the
checkpoints shipped in the repository's data/models/."""

from pathlib import Path

DATA_ROOT = Path(__file__).resolve().parents[2] / "data"


def shipped_model(name: str) -> Path:
    """The folder of a checkpoint shipped in data/models/, whatever the current directory."""
    folder = DATA_ROOT / "models" / name
    if not folder.is_dir():
        found = sorted(p.name for p in (DATA_ROOT / "models").glob("*"))
        raise FileNotFoundError(f"no shipped model {name!r} in {DATA_ROOT / 'models'} (found: "
                                f"{', '.join(found) or 'nothing'}); the data/ folder comes with a "
                                f"clone of the ddlearn repository (then `pip install -e .`)")
    return folder
