"""Text from people: what is dropped from it, how much work it may cause, and how a label fills a template.

Everything a person types (queries, labels, prompt templates, texts to rank, questions) passes through here on
its way to the tokenizer, from the page, the command line and the Python API alike:

- `clean_text` drops the characters no text means: control characters, bidirectional overrides (which make a text
  display in another order than it reads) and lone surrogates (which no response can encode);
- the limits below bound the work one request may cause, and `check_texts` / `check_prompts` enforce them with an
  `InputError` that says what to change;
- `fill` puts a label into a template by plain substitution: a template is data, never a format string;
- `bound_for_tokenizer` and `bound_word_cache` keep the tokenizer's work and memory bounded whatever it is given.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

from mbm.data.language import fix_articles
from mbm.errors import InputError

MAX_TEXT_CHARS = 1000  # one query, label, template or text to rank
MAX_WORD_CHARS = 64  # longer runs without a space are cut into pieces before the tokenizer: its BPE grows with
#                      the square of a word's length, and no real word is this long
MAX_TOKENIZED_CHARS = 2 * MAX_TEXT_CHARS  # a filled prompt; nothing further could reach a 77-token context anyway
MAX_LABELS = 1000  # a softmax over more labels than this is a mistake, not a classifier
MAX_TEMPLATES = 20  # each label is embedded once per template
MAX_PROMPTS = 4000  # labels x templates embedded for one request
MAX_TEXTS = 1000  # texts ranked for one image
# A page that strangers share (every request costs the others' time): labels and texts fit a table, and one
# classification embeds at most 400 prompts (about 1 s of a 2-core CPU for the embedded model, docs/BENCHMARKS.md)
SHARED_MAX_LABELS = 100
SHARED_MAX_TEXTS = 100
SHARED_MAX_PROMPTS = 400
SHARED_PROMPTS_PER_MINUTE = 1200  # what one session may embed in a minute: 3 of the largest requests, or 37 of 32
WORD_CACHE = 20_000  # words whose BPE a tokenizer remembers; the oldest go first

# C0/C1 controls (tabs and line breaks become spaces first), bidirectional overrides and isolates (U+202A-202E,
# U+2066-2069), and lone surrogates. Other format characters stay: the zero-width joiner holds emoji sequences.
_DROPPED = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069"
                      "\ud800-\udfff]")
_LONG_RUN = re.compile(rf"\S{{{MAX_WORD_CHARS + 1},}}")


def clean_text(text: str, keep_lines: bool = False) -> str:
    """`text` without the characters no text means (see the module docstring), with tabs (and line breaks, unless
    `keep_lines`) as spaces."""
    return _DROPPED.sub("", re.sub(r"[\t\r]" if keep_lines else r"[\t\n\r]", " ", text))


def fill(template: str, label: str) -> str:
    """The prompt for `label`: each "{}" in `template` replaced by it, else the label after the template; nothing
    else in either is interpreted ("a {{}} of {0.__class__}" stays as written)."""
    text = template.replace("{}", label) if "{}" in template else f"{template} {label}"
    return fix_articles(text)


def check_texts(texts: Sequence[str], what: str, most: int | None, least: int = 1) -> list[str]:
    """`texts` cleaned, stripped and without blanks; an `InputError` unless there are `least` to `most` (None: any
    number) of them, each at most `MAX_TEXT_CHARS` characters. `what` names one of them ("label") in messages."""
    if isinstance(texts, str) or not all(isinstance(t, str) or t is None for t in texts):
        raise InputError(f"give the {what}s as a list of texts")
    cleaned = [c for c in (clean_text(t).strip() for t in texts if t) if c]
    if len(cleaned) < least:
        raise InputError(f"give at least {least} {what}{'s' if least > 1 else ''}")
    if most is not None and len(cleaned) > most:
        raise InputError(f"{len(cleaned):,} {what}s is too many: give at most {most:,}")
    long = next((t for t in cleaned if len(t) > MAX_TEXT_CHARS), None)
    if long is not None:
        raise InputError(f"keep each {what} under {MAX_TEXT_CHARS:,} characters; one has {len(long):,}")
    return cleaned


def check_prompts(n_labels: int, n_templates: int, most: int = MAX_PROMPTS) -> None:
    """An `InputError` when labels x templates is more than `most` prompts, what one request may embed."""
    if n_labels * n_templates > most:
        raise InputError(f"{n_labels:,} labels x {n_templates} templates is {n_labels * n_templates:,} prompts; "
                         f"one request embeds at most {most:,}: use fewer labels or templates")


def bound_for_tokenizer(text: str) -> str:
    """`text` as the tokenizer may see it: cleaned, cut at `MAX_TOKENIZED_CHARS`, and runs of more than
    `MAX_WORD_CHARS` characters without a space broken into pieces of that length."""
    text = clean_text(text)[:MAX_TOKENIZED_CHARS]
    return _LONG_RUN.sub(lambda m: " ".join(_pieces(m.group(0))), text)


def _pieces(run: str) -> list[str]:
    return [run[i:i + MAX_WORD_CHARS] for i in range(0, len(run), MAX_WORD_CHARS)]


class _BoundedCache(dict):
    """A dict that keeps its first (pinned) entries and at most `size` others, dropping the oldest: the word cache
    of open_clip's BPE tokenizer, which otherwise keeps every word it ever saw."""

    def __init__(self, pinned: dict, size: int):
        super().__init__(pinned)
        self._pinned, self._size, self._lock = set(pinned), size, threading.Lock()

    def __setitem__(self, key, value) -> None:
        with self._lock:
            if len(self) >= self._size + len(self._pinned):
                oldest = next(k for k in self if k not in self._pinned)
                del self[oldest]
            super().__setitem__(key, value)


def bound_word_cache(tokenizer, size: int = WORD_CACHE):
    """Give `tokenizer` (open_clip's BPE `SimpleTokenizer`; others are left as they are) a word cache of at most
    `size` words besides its special tokens. Returns the tokenizer."""
    cache = getattr(tokenizer, "cache", None)
    if type(cache) is dict:
        tokenizer.cache = _BoundedCache(cache, size)
    return tokenizer
