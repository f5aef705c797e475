"""The server's credentials: write keys, the admin token and the inbox secret.

Each comes from its environment variable, else from `DATA/credentials.json`, else is
made now and saved there (readable by its owner only), and the operator is told once.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tripwire.server.auth import Secret

CREDENTIALS_FILE: Final = "credentials.json"

# (label, the value when it was just made and must be shown once, else None; where it comes from)
Note = tuple[str, str | None, str]


@dataclass(repr=False)
class Credentials:
    """The server's credentials, and a note on where each came from for the startup lines."""

    write_keys: list[Secret]
    admin_token: Secret
    inbox_secret: Secret
    notes: list[Note]

    def __repr__(self) -> str:  # a note holds a value just made; each Secret masks itself
        notes = [(label, None if value is None else "**********", source) for label, value, source in self.notes]
        return (
            f"Credentials(write_keys={self.write_keys!r}, admin_token={self.admin_token!r}, "
            f"inbox_secret={self.inbox_secret!r}, notes={notes!r})"
        )


def load_credentials(data_dir: Path, environ: Mapping[str, str] | None = None) -> Credentials:
    env = os.environ if environ is None else environ
    path = data_dir / CREDENTIALS_FILE
    saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    notes: list[Note] = []
    made = False

    def one(variable: str, key: str, label: str, make: Callable[[], str], many: bool = False) -> list[str]:
        nonlocal made
        given = env.get(variable, "").strip()
        if given:
            notes.append((label, None, f"from {variable}"))
            return [v.strip() for v in given.split(",") if v.strip()] if many else [given]
        stored = saved.get(key)
        if stored and all(isinstance(v, str) and v for v in (stored if isinstance(stored, list) else [stored])):
            notes.append((label, None, f"saved in {path}"))
            return list(stored) if isinstance(stored, list) else [stored]
        value = make()
        saved[key] = [value] if many else value
        made = True
        notes.append((label, value, f"new, saved in {path}"))
        return [value]

    keys = one("TRIPWIRE_WRITE_KEYS", "write_keys", "write key", lambda: secrets.token_urlsafe(24), many=True)
    (admin,) = one("TRIPWIRE_ADMIN_TOKEN", "admin_token", "admin token", lambda: secrets.token_urlsafe(32))
    (inbox,) = one("TRIPWIRE_INBOX_SECRET", "inbox_secret", "inbox secret", lambda: secrets.token_urlsafe(32))
    if made:
        write_private_json(path, saved)
    return Credentials([Secret(k) for k in keys], Secret(admin), Secret(inbox), notes)


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` atomically, readable and writable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    tmp.replace(path)
