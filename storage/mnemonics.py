"""Mnemonic dataset ids such as `brisk_silver_otter`: easy to say, type and remember.

An id is two different adjectives and a noun (a "name"), from the word lists in
`storage/wordlists/`, drawn with `secrets`. With the lists as shipped that is over 2 * 10**9
combinations, so ids are neither guessable nor likely to collide; `new_mnemonic` still checks
and draws again on a collision.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from functools import cache
from pathlib import Path

__all__ = [
    "MNEMONIC_PATTERN",
    "adjectives",
    "is_mnemonic",
    "mnemonic_combinations",
    "names",
    "new_mnemonic",
    "random_mnemonic",
]

WORDLIST_DIR = Path(__file__).with_name("wordlists")
MNEMONIC_PATTERN = re.compile(r"^[a-z]+_[a-z]+_[a-z]+$")
_WORD = re.compile(r"^[a-z]+$")


@cache
def _load(name: str) -> tuple[str, ...]:
    words = (WORDLIST_DIR / f"{name}.txt").read_text(encoding="ascii").split()
    bad = [word for word in words if not _WORD.match(word)]
    if bad or len(set(words)) != len(words):
        raise ValueError(f"word list {name}.txt must hold unique lowercase ASCII words (bad: {bad[:5]})")
    return tuple(words)


def adjectives() -> tuple[str, ...]:
    """The adjectives (`storage/wordlists/adjectives.txt`)."""
    return _load("adjectives")


def names() -> tuple[str, ...]:
    """The nouns that end an id (`storage/wordlists/names.txt`)."""
    return _load("names")


def mnemonic_combinations() -> int:
    """How many different ids exist: ordered pairs of different adjectives times nouns."""
    count = len(adjectives())
    return count * (count - 1) * len(names())


def random_mnemonic() -> str:
    """One id, `adjective_adjective_name`, uniformly random over all combinations."""
    words = adjectives()
    first = secrets.choice(words)
    second = secrets.choice(words)
    while second == first:
        second = secrets.choice(words)
    return f"{first}_{second}_{secrets.choice(names())}"


def new_mnemonic(exists: Callable[[str], bool], *, attempts: int = 50) -> str:
    """A fresh id for which `exists(id)` is false (e.g. a query on the dataset table).

    Draws again on a collision; after `attempts` collisions in a row (practically impossible
    unless `exists` is wrong) raises RuntimeError rather than loop forever. A unique constraint in
    the database must still guard the race between checking and inserting.
    """
    for _ in range(attempts):
        candidate = random_mnemonic()
        if not exists(candidate):
            return candidate
    raise RuntimeError(f"no free mnemonic id after {attempts} attempts")


def is_mnemonic(text: str) -> bool:
    """Whether `text` has the shape of a mnemonic id (three lowercase words joined by '_')."""
    return bool(MNEMONIC_PATTERN.match(text))
