"""Settings: every variable parsed in one place, bad values named clearly."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from bgdownload.config import PREFIX, VARIABLES, Settings
from bgdownload.errors import ConfigError


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"BGDOWNLOAD_SETTINGS_FILE": str(tmp_path / "none"), **env})


def test_defaults_match_the_contract(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert s.download_dir == Path.home() / "Downloads" / "bgdownload"
    assert (s.progress_interval, s.concurrency, s.connections, s.retries) == (0.5, 8, 1, 3)
    assert s.retention == 7 * 86400
    assert s.rate_limit == (60, 60.0)
    assert s.max_bytes is None and s.max_speed is None and s.single_user


def test_every_variable_is_parsed(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("tfile:carol\n# comment\n")
    s = settings(
        tmp_path,
        BGDOWNLOAD_REDIS_URL="redis://h:1/2", BGDOWNLOAD_DIR=str(tmp_path / "d"),
        BGDOWNLOAD_URL="http://127.0.0.1:9/", BGDOWNLOAD_TOKEN="tok",
        BGDOWNLOAD_TOKENS="ta:alice, tb:bob", BGDOWNLOAD_TOKENS_FILE=str(tokens),
        BGDOWNLOAD_ALLOW_NETWORKS="127.0.0.0/8, ::1/128", BGDOWNLOAD_MAX_BYTES="10MiB",
        BGDOWNLOAD_PROGRESS_INTERVAL="0.25", BGDOWNLOAD_CONCURRENCY="100",
        BGDOWNLOAD_CONNECTIONS="8", BGDOWNLOAD_MAX_SPEED="1M", BGDOWNLOAD_RETRIES="0",
        BGDOWNLOAD_RETENTION="12h", BGDOWNLOAD_RATE_LIMIT="10/second",
        BGDOWNLOAD_FILE_URL_TEMPLATE="https://f.example/{file_id}",
        BGDOWNLOAD_STATE_DIR=str(tmp_path / "s"),
    )
    assert s.redis_url == "redis://h:1/2" and s.api_url == "http://127.0.0.1:9"
    assert s.tokens == {"ta": "alice", "tb": "bob", "tfile": "carol"} and not s.single_user
    assert s.allow_networks == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert s.max_bytes == 10 * 1024 * 1024 and s.max_speed == 1_000_000
    assert (s.progress_interval, s.concurrency, s.connections, s.retries) == (0.25, 100, 8, 0)
    assert s.retention == 12 * 3600 and s.rate_limit == (10, 1.0)
    assert s.state_dir == tmp_path / "s"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("BGDOWNLOAD_RATE_LIMIT", "abc", "60/minute"),
        ("BGDOWNLOAD_RATE_LIMIT", "0/minute", "60/minute"),
        ("BGDOWNLOAD_MAX_BYTES", "lots", "size"),
        ("BGDOWNLOAD_CONCURRENCY", "0", "between 1 and"),
        ("BGDOWNLOAD_CONNECTIONS", "x", "integer"),
        ("BGDOWNLOAD_PROGRESS_INTERVAL", "-1", ">="),
        ("BGDOWNLOAD_RETENTION", "7 weeks", "duration"),
        ("BGDOWNLOAD_ALLOW_NETWORKS", "10.0.0.0/33", "CIDR"),
        ("BGDOWNLOAD_TOKENS", "no-owner", "token:owner"),
        ("BGDOWNLOAD_REDIS_URL", "localhost:6379", "redis://"),
        ("BGDOWNLOAD_URL", "ftp://x", "http://"),
        ("BGDOWNLOAD_FILE_URL_TEMPLATE", "https://x/", "{file_id}"),
    ],
)
def test_bad_values_get_a_clear_error(tmp_path: Path, name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings(tmp_path, **{name: value})
    assert name in str(err.value) and fragment in str(err.value)


def test_settings_file_mirrors_the_environment_and_env_wins(tmp_path: Path) -> None:
    file = tmp_path / "settings.env"
    file.write_text("# mine\nBGDOWNLOAD_CONCURRENCY=3\nexport BGDOWNLOAD_RETRIES='5'\n")
    s = Settings.from_env({"BGDOWNLOAD_SETTINGS_FILE": str(file), "BGDOWNLOAD_RETRIES": "1"})
    assert s.concurrency == 3 and s.retries == 1
    file.write_text("NOT_OURS=1\n")
    with pytest.raises(ConfigError, match=r"settings\.env:1"):
        Settings.from_env({"BGDOWNLOAD_SETTINGS_FILE": str(file)})


def test_secrets_are_masked_in_repr(tmp_path: Path) -> None:
    s = settings(tmp_path, BGDOWNLOAD_TOKEN="supersecret", BGDOWNLOAD_TOKENS="hunter2:alice")
    assert "supersecret" not in repr(s) and "hunter2" not in repr(s)


def test_every_setting_has_exactly_its_variables() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {v.field for v in VARIABLES} == fields
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names)) and all(n.startswith(PREFIX) for n in names)
    merged = [v.field for v in VARIABLES if v.merge]
    assert merged == ["tokens", "tokens"]  # the file first, so BGDOWNLOAD_TOKENS wins


def test_inline_tokens_win_over_the_tokens_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("same:from-file\nonly:file\n")
    s = settings(tmp_path, BGDOWNLOAD_TOKENS_FILE=str(tokens), BGDOWNLOAD_TOKENS="same:inline")
    assert s.tokens == {"same": "inline", "only": "file"}
