"""A letters-only CLIP tokenizer small enough to build in a test (shared by the fixer and training tests)."""

import json
from pathlib import Path


def save_letters_clip_tokenizer(files_dir: Path, target: Path, **tokenizer_kwargs) -> int:
    """Write ``vocab.json`` and ``merges.txt`` (a-z, each alone and word-final) into ``files_dir``, build a
    ``CLIPTokenizer`` from them and save it to ``target``. Returns the vocabulary size."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
        vocab[letter + "</w>"] = len(vocab)
    (files_dir / "vocab.json").write_text(json.dumps(vocab))
    (files_dir / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(files_dir / "vocab.json"), str(files_dir / "merges.txt"), **tokenizer_kwargs).save_pretrained(target)
    return len(vocab)
