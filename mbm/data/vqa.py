"""Shapes-VQA: questions about synthetic scenes with answers from a fixed vocabulary.

Neither modality alone answers them: the image does not know the question, the question does not
know the image. Splits are those of `mbm.data.shapes` (fixed seeds): `train`/`val`/`test` never hold
the held-out colour-shape combinations, `heldout` always holds one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mbm.data.language import ANSWERS, QUESTION_TYPES, place_at, questions
from mbm.data.shapes import COLOURS, COLS, ROWS, SHAPES, Scene, make_scene

ANSWER_INDEX = {a: i for i, a in enumerate(ANSWERS)}
TOKEN = re.compile(r"[a-z]+")
# Every word the question templates use (tests check the generator never leaves this list), then <unk>.
WORDS = ("<pad>", "<unk>", "what", "colour", "is", "the", "shape", "shapes", "how", "many", "are", "there", "a", "an",
         "at", "on", "in", "top", "middle", "bottom", "left", "right", "center", "small", "medium", "large",
         "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
         "circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "heart")
WORD_INDEX = {w: i for i, w in enumerate(WORDS)}
MAX_WORDS = 12
SPELLINGS = {"color": "colour", "centre": "center"}  # what people type -> the word the questions use
_ANY = lambda words: "(?:" + "|".join(words) + ")"  # noqa: E731  a regex alternative of whole words
_PLACES = _ANY(place_at(r, c) for r in range(len(ROWS)) for c in range(len(COLS)))
# The four forms of question Shapes-VQA asks (`mbm.data.language.questions`), over its words.
FORMS = tuple(re.compile(form) for form in (
    rf"what colour is the {_ANY(SHAPES)}", rf"what shape is {_PLACES}", "how many shapes are there",
    rf"is there an? {_ANY(COLOURS)} {_ANY(SHAPES)}"))


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


def normalise(question: str) -> str:
    """A question in the words Shapes-VQA uses: lower case, British spelling ("color" -> "colour")."""
    return re.sub(r"\w+", lambda m: SPELLINGS.get(m[0], m[0]), question.lower())


def unknown_words(question: str) -> list[str]:
    """The words of a question (any script, digits too) that no Shapes-VQA question holds, in order."""
    return [w for w in dict.fromkeys(re.findall(r"\w+", normalise(question))) if w not in WORD_INDEX]


def is_asked(question: str) -> bool:
    """True if the question has one of the `FORMS` Shapes-VQA asks (whatever its punctuation)."""
    return any(form.fullmatch(" ".join(TOKEN.findall(normalise(question)))) for form in FORMS)


def tokenize(question: str) -> list[int]:
    """Word ids of a question, padded (0) or cut to `MAX_WORDS`; unknown words map to <unk> (1)."""
    ids = [WORD_INDEX.get(w, 1) for w in TOKEN.findall(question.lower())][:MAX_WORDS]
    return ids + [0] * (MAX_WORDS - len(ids))


__all__ = ["ANSWERS", "ANSWER_INDEX", "Example", "FORMS", "MAX_WORDS", "QUESTION_TYPES", "WORDS", "examples",
           "is_asked", "normalise", "tokenize", "unknown_words"]
