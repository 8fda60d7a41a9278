"""open_clip's `SimpleTokenizer` (OpenAI CLIP's byte-level BPE) without torch, for a query process that never imports
it (`mbm.models._query`): importing open_clip imports torch and torchvision, 2-3 s and ~0.8 GB before the first
token. The same cleaning (ftfy, HTML entities twice, whitespace, lower case), pattern, merges and truncation as
open_clip's (its vocabulary file is read from the installed open_clip package, which is found, not imported), and
ids as a numpy array; tests/test_query.py checks the ids against open_clip's own on text of every script.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from functools import lru_cache
from pathlib import Path

import ftfy
import numpy as np
import regex

VOCAB = "bpe_simple_vocab_16e6.txt.gz"
SPECIAL = ("<start_of_text>", "<end_of_text>")


def vocab_file() -> Path:
    """open_clip's BPE vocabulary, from its installed package (located without running its `__init__`)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip is not installed: its tokenizer vocabulary is needed")
    return Path(next(iter(spec.submodule_search_locations))) / VOCAB


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """OpenAI's byte -> character table: printable bytes stand for themselves, the rest for chr(256), chr(257), ..."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)
    return dict(zip(bs, map(chr, cs)))


class ClipBPE:
    """`tokenizer(texts) -> (N, context_length)` int64 ids: start marker, BPE ids, end marker, zero padding; a text
    too long keeps its first `context_length - 1` ids and ends with the end marker (open_clip's truncation)."""

    def __init__(self, context_length: int = 77, path: str | Path | None = None):
        merges = gzip.open(path or vocab_file()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
        merges = [tuple(m.split()) for m in merges]
        self.byte_encoder = _bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + list(SPECIAL)
        self.encoder = {t: i for i, t in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {t: t for t in SPECIAL}
        self.pat = regex.compile("|".join(SPECIAL) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                                 regex.IGNORECASE)
        self.sot_token_id, self.eot_token_id = (self.encoder[t] for t in SPECIAL)
        self.context_length = context_length

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            first, second = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if (first, second) not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        self.cache[token] = out = " ".join(word)
        return out

    def encode(self, text: str) -> list[int]:
        text = " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).strip().split()).lower()
        ids = []
        for token in self.pat.findall(text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids

    def __call__(self, texts: str | list[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else texts
        out = np.zeros((len(texts), self.context_length), np.int64)
        for row, text in zip(out, texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > self.context_length:
                ids = ids[:self.context_length]
                ids[-1] = self.eot_token_id
            row[:len(ids)] = ids
        return out
