"""The room as a device hears it, trimmed to the text frames it accepts.

`welcome` and `resumed` list every participant with its attributes; in a big
enough room that outgrows the device's `max_text` and the device could never
join. `fit` leaves out what a device needs least, first: attributes (other
participants' before agents', newest first), then the room's metadata, then
whole participants (agents last). The message says what it left out in
`truncated`; a participant listed without `attributes` had them left out.
"""

from __future__ import annotations

import json
from typing import Any

# room for the `truncated` field itself, at its largest
_TRUNCATED_RESERVE = len(json.dumps({"truncated": {"participants": 2 ** 32, "attributes": 2 ** 32,
                                                   "metadata": True}})) + 2


def size(msg: Any) -> int:
    """Bytes of msg as the gateway sends it (json.dumps, UTF-8)."""
    return len(json.dumps(msg).encode())


def _is_agent(p: dict[str, Any]) -> bool:
    return p.get("kind") == "agent"


def _without_attributes(p: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in p.items() if k != "attributes"}


class _Sizes:
    """The JSON size of a participant list, kept up to date as entries shrink or go."""

    def __init__(self, items: list[dict[str, Any]]):
        self.each: list[int | None] = [size(p) for p in items]
        self.sum = sum(n for n in self.each if n is not None)
        self.count = len(items)

    def list_bytes(self) -> int:  # "[a, b]": brackets and ", " between items
        return 2 + self.sum + 2 * max(self.count - 1, 0)

    def set(self, i: int, n: int | None) -> None:
        old = self.each[i]
        if old is not None:
            self.sum -= old
            self.count -= 1
        if n is not None:
            self.sum += n
            self.count += 1
        self.each[i] = n


def fit(msg: dict[str, Any], max_bytes: int) -> dict[str, Any] | None:
    """msg (with a `participants` list) trimmed to at most max_bytes; None if even the bare message is larger."""
    participants: list[dict[str, Any]] = list(msg["participants"])
    sizes = _Sizes(participants)
    base = size({**msg, "participants": []}) - 2  # without the empty list's "[]"
    if base + sizes.list_bytes() <= max_bytes:
        return msg
    budget = max_bytes - _TRUNCATED_RESERVE
    truncated: dict[str, Any] = {}
    stripped: set[int] = set()
    # newest first within each group, others before agents
    order = sorted(reversed(range(len(participants))), key=lambda i: _is_agent(participants[i]))

    for i in order:
        if base + sizes.list_bytes() <= budget:
            break
        if participants[i].get("attributes"):
            participants[i] = _without_attributes(participants[i])
            sizes.set(i, size(participants[i]))
            stripped.add(i)
    room = msg.get("room")
    if base + sizes.list_bytes() > budget and isinstance(room, dict) and room.get("metadata"):
        room = {**room, "metadata": ""}
        base = size({**msg, "room": room, "participants": []}) - 2
        truncated["metadata"] = True
    for i in order:
        if base + sizes.list_bytes() <= budget:
            break
        sizes.set(i, None)
        truncated["participants"] = truncated.get("participants", 0) + 1
    if base + sizes.list_bytes() > budget:
        return None
    listed_bare = sum(1 for i in stripped if sizes.each[i] is not None)
    if listed_bare:
        truncated["attributes"] = listed_bare
    out = {**msg, "participants": [p for p, n in zip(participants, sizes.each) if n is not None],
           "truncated": truncated}
    if room is not None:
        out["room"] = room
    return out


def fit_participant(msg: dict[str, Any], max_bytes: int) -> dict[str, Any] | None:
    """A `joined` message, without the participant's attributes if that is what it takes; None if still too large."""
    if size(msg) <= max_bytes:
        return msg
    out = {**msg, "p": _without_attributes(msg["p"]), "truncated": {"attributes": 1}}
    return out if size(out) <= max_bytes else None
