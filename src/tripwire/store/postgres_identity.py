"""The record key of each event in the cluster, so all of a person's events share a partition.

A worker merges an anonymous visitor into the user they become exactly as the single
node does, but only when both histories are in its partition. Keying records by the id
an event carries would split them: the visitor's events by anonymousId, the identified
ones by userId. So ingest nodes key by identity: an event takes the key of the ids it
names, as recorded here when an identify or alias linked them, else its anonymousId (a
person's first id is usually the anonymous one), else its userId. Linking two ids
records both under the key the event takes: the userId's key if the user was seen
linked before, else the anonymousId's (or alias's previousId's), else that id itself.
So a browser's anonymous events, its identify, and the server's later events of that
user all go to one partition. Only a user linked from two devices that each had their own
anonymous history keeps the second device's earlier history in its own partition: from
the link on, everything goes to the user's partition (docs/cluster.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from tripwire.store.postgres_db import PostgresDatabase

# (userId, anonymousId, previousId) of an event; previousId only for an alias.
Ids = tuple[str | None, str | None, str | None]


class PostgresIdentity:
    """The keys of events, and the links identify and alias events make, in `identities`."""

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def keys(self, events: Sequence[Ids]) -> list[str]:
        """Each event's record key, in order (an event sees the links of those before it)."""
        ids = sorted({x for event in events for x in event if x is not None})
        with self.db.transaction() as conn:
            known: dict[str, str] = dict(
                conn.execute("SELECT id, key FROM identities WHERE id = ANY(%s)", (ids,)).fetchall()
            )
            links: dict[str, str] = {}
            keys: list[str] = []
            for user, anonymous, previous in events:
                other = anonymous if anonymous is not None else previous
                if user is not None and other is not None:  # a link: both ids take one key
                    key = known.get(user) or known.get(other) or other
                    known[user] = known[other] = links[user] = links[other] = key
                else:
                    one = other if other is not None else user
                    assert one is not None  # every event names a user or an anonymous id
                    key = known.get(one, one)
                keys.append(key)
            if links:
                conn.cursor().executemany(
                    "INSERT INTO identities (id, key) VALUES (%s, %s)"
                    " ON CONFLICT (id) DO UPDATE SET key = EXCLUDED.key",
                    list(links.items()),
                )
        return keys
