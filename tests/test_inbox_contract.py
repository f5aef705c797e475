"""The inbox contract: in-app messages stored once, paged newest first, read and expired; on every adapter."""

from __future__ import annotations

import pytest

from tripwire.store import InboxStore, NewInboxItem, Stores


@pytest.fixture
def inbox(stores: Stores) -> InboxStore:
    return stores.inbox


def item(
    fire_id: str, user: str = "u1", at: int = 100, expires: int | None = None, action: str = "note"
) -> NewInboxItem:
    return NewInboxItem(user, fire_id, action, f"title {fire_id}", "body", None, at, expires)


def test_a_message_is_stored_once_per_fire_and_action(inbox: InboxStore) -> None:
    first, new = inbox.add(item("f1"))
    assert new and (first.user_id, first.fire_id, first.title, first.read_at) == ("u1", "f1", "title f1", None)
    again, new_again = inbox.add(NewInboxItem("u1", "f1", "note", "other", "other", "https://x", 200, None))
    assert not new_again and again == first
    other, new_other = inbox.add(item("f1", action="other"))
    assert new_other and other.id > first.id


def test_messages_page_newest_first_and_hide_expired_ones(inbox: InboxStore) -> None:
    ids = [inbox.add(item(f"f{i}", expires=500 if i == 2 else None))[0].id for i in range(5)]
    inbox.add(item("g1", user="u2"))
    assert [m.fire_id for m in inbox.messages("u1", now=100)] == ["f4", "f3", "f2", "f1", "f0"]
    assert [m.fire_id for m in inbox.messages("u1", now=500)] == ["f4", "f3", "f1", "f0"]
    assert [m.fire_id for m in inbox.messages("u1", now=100, limit=2)] == ["f4", "f3"]
    assert [m.fire_id for m in inbox.messages("u1", now=100, before=ids[3])] == ["f2", "f1", "f0"]
    assert [m.fire_id for m in inbox.messages("u1", now=100, after=ids[1], before=ids[4])] == ["f3", "f2"]
    assert inbox.unread("u1", now=100) == 5 and inbox.unread("u1", now=500) == 4


def test_mark_read_returns_the_ids_read_just_now(inbox: InboxStore) -> None:
    ids = [inbox.add(item(f"f{i}"))[0].id for i in range(3)]
    other = inbox.add(item("g1", user="u2"))[0].id
    assert inbox.mark_read("u1", [ids[0], other], now=200) == [ids[0]]  # another user's id is not theirs
    assert inbox.mark_read("u1", [ids[0]], now=300) == []
    assert inbox.mark_read("u1", [], now=300) == []
    assert inbox.mark_read("u1", None, now=400) == ids[1:]
    assert inbox.unread("u1", now=400) == 0 and inbox.unread("u2", now=400) == 1
    assert [m.read_at for m in inbox.messages("u1", now=400)] == [400, 400, 200]


def test_purge_deletes_expired_messages(inbox: InboxStore) -> None:
    inbox.add(item("f1", expires=150))
    inbox.add(item("f2", expires=300))
    inbox.add(item("f3"))
    assert inbox.purge(now=150) == 1
    assert inbox.purge(now=150) == 0
    assert [m.fire_id for m in inbox.messages("u1", now=0)] == ["f3", "f2"]
