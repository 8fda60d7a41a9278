"""What a model has read: the tokens of its training captions, and one sentence about its world.

A from-scratch model like `mbm-shapes` learned an embedding only for the tokens its captions held; any other
token ("dog" for a model of coloured shapes) still has the random vector it started with, so a query made of
such tokens lands somewhere arbitrary and its results are guesses, however confident the scores look. A model
folder may ship `scope.json` (`{"knows": sentence, "token_ids": [...]}`, written by `write_scope`), and
`Scope.unseen(text)` names the words of a query the model never read, so the page can say so plainly.
Pretrained open_clip models have read the web and ship no scope: nothing is flagged for them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

SCOPE_FILE = "scope.json"


@dataclass(frozen=True)
class Scope:
    knows: str  # one sentence: the model's world and its languages
    token_ids: frozenset[int]  # every token of its training captions

    def unseen(self, text: str, tokenize: Callable[[str], list[int]]) -> list[str]:
        """The words of `text` with a token the model never read in training, in order, without repeats."""
        out = []
        for word in re.findall(r"\w[\w'’-]*", text):
            if word not in out and not set(tokenize(word)) <= self.token_ids:
                out.append(word)
        return out

    def note(self, model: str, words: list[str]) -> str:
        """The sentence a page shows for a query with `words` the model never read."""
        shown = ", ".join(f"'{w}'" for w in words[:5]) + (" ..." if len(words) > 5 else "")
        return (f"{model} never read {shown} in training, so for {'it' if len(words) == 1 else 'them'} its answers "
                f"are guesses. {self.knows}")


def load_scope(folder: Path) -> Scope | None:
    """The scope a model folder ships, or None (no file, or not a scope file)."""
    path = Path(folder) / SCOPE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Scope(str(data["knows"]), frozenset(int(t) for t in data["token_ids"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_scope(folder: Path, knows: str, texts: Iterable[str], tokenize: Callable[[str], list[int]]) -> Path:
    """Write `folder/scope.json`: `knows` and every token of `texts` (the model's training captions)."""
    ids: set[int] = set()
    for text in texts:
        ids.update(tokenize(text))
    path = Path(folder) / SCOPE_FILE
    path.write_text(json.dumps({"knows": knows, "token_ids": sorted(ids)}, separators=(",", ":")) + "\n",
                    encoding="utf-8")
    return path
