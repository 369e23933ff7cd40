"""``BGDOWNLOAD_OWNER_CONCURRENCY`` (docs/api.md §17): parsed, checked, and its default."""

from __future__ import annotations

import pytest

from bgdownload.config import Settings
from bgdownload.errors import ConfigError

NO_FILE = {"BGDOWNLOAD_SETTINGS_FILE": "/nonexistent/settings.env"}


@pytest.mark.parametrize(
    ("concurrency", "expected"), [("8", 4), ("3", 1), ("2", 1), ("1", 1), ("100", 50)]
)
def test_the_default_cap_is_half_the_slots_and_at_least_one(
    concurrency: str, expected: int
) -> None:
    settings = Settings.from_env({**NO_FILE, "BGDOWNLOAD_CONCURRENCY": concurrency})
    assert settings.owner_concurrency is None and settings.owner_cap == expected


def test_a_set_cap_wins_even_above_the_slots() -> None:
    settings = Settings.from_env({**NO_FILE, "BGDOWNLOAD_CONCURRENCY": "4",
                                  "BGDOWNLOAD_OWNER_CONCURRENCY": "6"})
    assert settings.owner_cap == 6


@pytest.mark.parametrize("text", ["0", "-1", "two", "1.5"])
def test_a_bad_cap_names_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="BGDOWNLOAD_OWNER_CONCURRENCY"):
        Settings.from_env({**NO_FILE, "BGDOWNLOAD_OWNER_CONCURRENCY": text})
