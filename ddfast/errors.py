"""The error ddfast raises for a bad value given to it by a user: :class:`UsageError`."""

from __future__ import annotations


class UsageError(ValueError):
    """A command-line flag, ``--set`` key or run argument whose value is not one it accepts. ``name`` is the
    flag or key (``--iterations``, ``--set lr_img``); the message says what it accepts and what it got. Raised
    before any data is loaded or any run folder written."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name
