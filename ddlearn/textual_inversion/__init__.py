"""Textual inversion (Gal et al. 2022): a new word for a concept, one new row of the token table.

| file          | what it holds                                                              |
|---------------|----------------------------------------------------------------------------|
| `loader.py`   | the paper's notation; pipelines' load/unload_textual_inversion, prompts    |
| `files.py`    | diffusers' and A1111's embedding files, locally or from the Hub            |
| `training.py` | add_placeholder_token, restore_other_embeddings, save_textual_inversion     |
"""

from ddlearn.textual_inversion.files import LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, read_embeddings
from ddlearn.textual_inversion.loader import (
    TextualInversionLoaderMixin,
    expand_multi_vector_tokens,
    vector_names,
)
from ddlearn.textual_inversion.training import (
    add_placeholder_token,
    learned_embeds,
    restore_other_embeddings,
    save_textual_inversion,
)

__all__ = ["TextualInversionLoaderMixin", "expand_multi_vector_tokens", "vector_names",
           "read_embeddings", "WEIGHTS_NAME", "LEGACY_WEIGHTS_NAME", "add_placeholder_token",
           "learned_embeds", "restore_other_embeddings", "save_textual_inversion"]
