"""Credentials of `tripwire serve`: environment first, else the data folder, else made once."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tripwire.server.credentials import load_credentials


def test_made_once_saved_owner_only_and_shown_only_when_made(tmp_path: Path) -> None:
    first = load_credentials(tmp_path, {})
    path = tmp_path / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shown = {label: value for label, value, _ in first.notes}
    assert shown["write key"] == first.write_keys[0].reveal()
    assert shown["admin token"] == first.admin_token.reveal()
    again = load_credentials(tmp_path, {})
    assert [k.reveal() for k in again.write_keys] == [k.reveal() for k in first.write_keys]
    assert again.admin_token.reveal() == first.admin_token.reveal()
    assert all(value is None for _, value, _ in again.notes)  # nothing secret is printed twice


def test_the_environment_wins_and_takes_several_write_keys(tmp_path: Path) -> None:
    env = {"TRIPWIRE_WRITE_KEYS": "k1, k2,", "TRIPWIRE_ADMIN_TOKEN": "adm", "TRIPWIRE_INBOX_SECRET": "in"}
    credentials = load_credentials(tmp_path, env)
    assert [k.reveal() for k in credentials.write_keys] == ["k1", "k2"]
    assert credentials.admin_token.reveal() == "adm"
    assert not (tmp_path / "credentials.json").exists()
    assert "adm" not in repr(credentials.admin_token)


def test_a_partial_file_is_completed_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"write_keys": ["wk"]}))
    credentials = load_credentials(tmp_path, {})
    assert [k.reveal() for k in credentials.write_keys] == ["wk"]
    assert set(json.loads(path.read_text())) == {"write_keys", "admin_token", "inbox_secret"}


def test_no_repr_of_the_credentials_shows_a_value_even_one_just_made(tmp_path: Path) -> None:
    made = load_credentials(tmp_path, {})
    values = [made.admin_token.reveal(), made.inbox_secret.reveal(), *(k.reveal() for k in made.write_keys)]
    assert any(value is not None for _, value, _ in made.notes)  # just made: the notes hold them, to show once
    for text in (repr(made), str(made), repr(made.write_keys)):
        assert not [value for value in values if value in text], text
