"""storage.mnemonics: word lists, the size of the id space, randomness and collisions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from storage import mnemonics

WORDLISTS = Path(mnemonics.__file__).with_name("wordlists")


def read_list(name: str) -> list[str]:
    return (WORDLISTS / f"{name}.txt").read_text(encoding="ascii").splitlines()


@pytest.mark.parametrize("name", ["adjectives", "names"])
def test_word_lists_are_clean(name):
    words = read_list(name)
    assert len(words) >= 1000
    assert len(set(words)) == len(words)
    assert all(re.fullmatch(r"[a-z]{3,12}", word) for word in words)
    assert words == sorted(words)


def test_more_than_a_billion_combinations():
    adjectives, names = read_list("adjectives"), read_list("names")
    count = len(adjectives) * (len(adjectives) - 1) * len(names)  # two different adjectives, a noun
    assert count > 10**9
    assert mnemonics.mnemonic_combinations() == count


def test_random_mnemonic_shape():
    adjectives, names = set(mnemonics.adjectives()), set(mnemonics.names())
    ids = [mnemonics.random_mnemonic() for _ in range(500)]
    assert len(set(ids)) == len(ids)
    for mnemonic in ids:
        assert mnemonics.is_mnemonic(mnemonic)
        first, second, name = mnemonic.split("_")
        assert first in adjectives and second in adjectives and first != second
        assert name in names
    assert not mnemonics.is_mnemonic("S-0001")
    assert not mnemonics.is_mnemonic("brave_otter")


def test_random_mnemonic_draws_from_secrets(monkeypatch):
    draws = iter(["brave", "brave", "quiet", "otter"])  # a repeated adjective is drawn again
    monkeypatch.setattr(mnemonics.secrets, "choice", lambda seq: next(draws))
    assert mnemonics.random_mnemonic() == "brave_quiet_otter"


def test_new_mnemonic_retries_on_collision():
    seen: list[str] = []

    def exists(candidate: str) -> bool:
        seen.append(candidate)
        return len(seen) <= 3

    mnemonic = mnemonics.new_mnemonic(exists)
    assert len(seen) == 4 and mnemonic == seen[-1]


def test_new_mnemonic_gives_up_when_everything_exists():
    with pytest.raises(RuntimeError, match="no free mnemonic id after 5 attempts"):
        mnemonics.new_mnemonic(lambda candidate: True, attempts=5)
