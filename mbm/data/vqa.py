"""Shapes-VQA: questions about synthetic scenes with answers from a fixed vocabulary.

Neither modality alone answers them: the image does not know the question, the question does not
know the image. Splits are those of `mbm.data.shapes` (fixed seeds): `train`/`val`/`test` never hold
the held-out colour-shape combinations, `heldout` always holds one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mbm.data.language import ANSWERS, QUESTION_TYPES, questions
from mbm.data.shapes import Scene, make_scene

ANSWER_INDEX = {a: i for i, a in enumerate(ANSWERS)}
TOKEN = re.compile(r"[a-z]+")
# Every word the question templates use (tests check the generator never leaves this list), then <unk>.
WORDS = ("<pad>", "<unk>", "what", "colour", "is", "the", "shape", "shapes", "how", "many", "are", "there", "a", "an",
         "at", "on", "in", "top", "middle", "bottom", "left", "right", "center", "small", "medium", "large",
         "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
         "circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "heart")
WORD_INDEX = {w: i for i, w in enumerate(WORDS)}
MAX_WORDS = 12


@dataclass(frozen=True)
class Example:
    split: str
    index: int  # the scene: make_scene(split, index)
    question: str
    answer: str
    qtype: str  # one of QUESTION_TYPES

    @property
    def scene(self) -> Scene:
        return make_scene(self.split, self.index)

    @property
    def label(self) -> int:
        return ANSWER_INDEX[self.answer]


def examples(split: str, n_scenes: int, start: int = 0) -> list[Example]:
    """Every question of scenes `start .. start + n_scenes - 1` of a split, in a fixed order."""
    return [Example(split, i, q, a, t) for i in range(start, start + n_scenes) for q, a, t in questions(make_scene(
        split, i))]


def tokenize(question: str) -> list[int]:
    """Word ids of a question, padded (0) or cut to `MAX_WORDS`; unknown words map to <unk> (1)."""
    ids = [WORD_INDEX.get(w, 1) for w in TOKEN.findall(question.lower())][:MAX_WORDS]
    return ids + [0] * (MAX_WORDS - len(ids))


__all__ = ["ANSWERS", "ANSWER_INDEX", "Example", "MAX_WORDS", "QUESTION_TYPES", "WORDS", "examples", "tokenize"]
