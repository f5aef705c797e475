"""The cluster's record keys by identity (PostgreSQL): all of a person's events share a key."""

from __future__ import annotations

from conftest import StoreLocation


def test_a_visitor_the_user_they_become_and_an_alias_share_the_first_ids_key(postgres_location: StoreLocation) -> None:
    identity = postgres_location.open().identity
    assert identity is not None
    # a visitor browses, logs in, and the server sends events under the userId alone
    assert identity.keys([(None, "a1", None), ("u1", "a1", None)]) == ["a1", "a1"]
    assert identity.keys([("u1", None, None), ("u1", "a1", None), (None, "a1", None)]) == ["a1"] * 3
    # an alias of a new id to the user takes the user's key; so do that id's events from then on
    assert identity.keys([("u1", None, "old-id"), (None, "old-id", None)]) == ["a1", "a1"]
    # a second device: its earlier anonymous events keep their key; from the login on, the user's
    assert identity.keys([(None, "a2", None), ("u1", "a2", None), (None, "a2", None)]) == ["a2", "a1", "a1"]
    # someone never linked keeps their own id; a known user alone keeps theirs
    assert identity.keys([("u9", None, None), (None, "a9", None)]) == ["u9", "a9"]


def test_ids_with_nul_and_many_at_once(postgres_location: StoreLocation) -> None:
    identity = postgres_location.open().identity
    assert identity is not None
    events = [(f"u\x00{i}", f"a{i}", None) for i in range(500)]
    assert identity.keys(events) == [f"a{i}" for i in range(500)]
    assert identity.keys([(f"u\x00{i}", None, None) for i in range(500)]) == [f"a{i}" for i in range(500)]
