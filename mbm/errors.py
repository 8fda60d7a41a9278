"""The errors that are meant for people, not programmers.

`InputError` is a person's mistake (a query, a label list, an image file, a flag): its message says what to
change. The page shows it as a `gr.Error` and the command line prints it and exits with status 2; any other
exception is a bug and surfaces as one. `StoreDamagedError` is a gallery store that cannot be read (the command
line exits with status 4).
"""

from __future__ import annotations


class InputError(ValueError):
    """Input that cannot be used as given; the message says what was wrong and what to do instead."""


class StoreDamagedError(RuntimeError):
    """A gallery's SQLite store is not a database, or is damaged; the message names it and says what to do."""
