"""A tiny CLIP tokenizer built offline for a closed caption vocabulary (no Hub download).

Stable Diffusion tokenizes with CLIP's byte-pair encoding (BPE): a word is split into characters and
adjacent pairs are merged by a ranked list of merges ("b l" -> "bl", "bl u" -> "blu", ...). CLIP's
own 49,408-token vocabulary lives on the Hub; the shipped tiny SD needs only the few dozen words its
captions use. So we write a vocab.json + merges.txt in CLIP's format where each caption word merges
left to right into one token, and every other word falls back to single characters. transformers'
`CLIPTokenizer` then reads it exactly as it reads SD 1.5's tokenizer/ folder.
"""

import json
import re
import string
from pathlib import Path

SPECIAL = ["<|startoftext|>", "<|endoftext|>"]


def clip_bpe_files(words) -> tuple:
    """-> (vocab dict, merges list) in which each word of `words` (or text) is a single token."""
    chars = list(string.ascii_lowercase + string.digits) + list(",.-'!?")
    vocab = SPECIAL + chars + [c + "</w>" for c in chars]
    merges = []
    # CLIP's pre-tokenizer splits "eye-spots" into "eye", "-", "spots": build tokens for the parts
    parts = {p for w in words for p in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", w.lower())}
    for word in sorted(parts):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]  # "red" -> r, e, d</w>
        merged = pieces[0]
        for piece in pieces[1:]:
            merge = f"{merged} {piece}"
            merged = merged + piece
            if merge not in merges:
                merges.append(merge)
                vocab.append(merged)
    vocab = list(dict.fromkeys(vocab))  # keep the first occurrence of each token
    return {token: i for i, token in enumerate(vocab)}, merges


def build_clip_tokenizer(words, save_directory, model_max_length: int = 77):
    """Write a CLIP tokenizer for `words` into `save_directory` and load it with transformers."""
    from transformers import CLIPTokenizer

    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe_files(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length)
    tokenizer.save_pretrained(folder)  # adds tokenizer_config.json, as an SD checkpoint has
    return tokenizer
