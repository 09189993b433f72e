"""WebSocket connection limits, in total and per client key (SPEC §10: resource limits per token).

Every stream connection holds one `Admission` from the hub's `ConnectionGate` from before the
handshake is accepted until its session ends. A key names who is charged for it: with auth off, the
client's address (on loopback every client shares one bucket); with auth on, the address until the
token is known, then the token (`Admission.rekey`). Over a limit, `TooManyConnectionsError` (HTTP
429, close 1013 "try again later"): the endpoint refuses the handshake, or closes a connection whose
token turns out to be over its own limit. Nothing here awaits or allocates per refused attempt.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from engine_live.errors import TooManyConnectionsError

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_KEY",
    "Admission",
    "ConnectionGate",
    "ConnectionStats",
    "address_key",
    "token_key",
]

DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_CONNECTIONS_PER_KEY = 100


def address_key(host: str | None) -> str:
    """The key of a connection whose token is not known (auth off, or not authenticated yet)."""
    return f"addr:{host or 'unknown'}"


def token_key(token: str) -> str:
    """The key of an authenticated connection: a digest, so the gate never holds the token itself."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """Open connections, how many keys hold them, the largest holding, and refusals so far."""

    open: int
    keys: int
    max_per_key_open: int
    refused: int


class ConnectionGate:
    """Counts open connections per key; `admit` refuses beyond `max_total` or `max_per_key`."""

    def __init__(
        self, max_total: int = DEFAULT_MAX_CONNECTIONS, max_per_key: int = DEFAULT_MAX_CONNECTIONS_PER_KEY
    ) -> None:
        if max_total < 1 or max_per_key < 1:
            raise ValueError("connection limits must be positive")
        self.max_total = max_total
        self.max_per_key = max_per_key
        self._open: Counter[str] = Counter()
        self._total = 0
        self._refused = 0

    def admit(self, key: str) -> Admission:
        """One more connection charged to `key`, or TooManyConnectionsError."""
        self._check(key, new=True)
        self._add(key)
        return Admission(self, key)

    def _check(self, key: str, *, new: bool) -> None:
        if new and self._total >= self.max_total:
            self._refused += 1
            raise TooManyConnectionsError("too many connections", limit=self.max_total, scope="total")
        if self._open[key] >= self.max_per_key:
            self._refused += 1
            raise TooManyConnectionsError("too many connections for this client", limit=self.max_per_key, scope="key")

    def _add(self, key: str) -> None:
        self._open[key] += 1
        self._total += 1

    def _remove(self, key: str) -> None:
        self._total -= 1
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]

    def stats(self) -> ConnectionStats:
        """What the gate holds now."""
        return ConnectionStats(self._total, len(self._open), max(self._open.values(), default=0), self._refused)


class Admission:
    """One admitted connection; `release` (idempotent) gives its place back."""

    __slots__ = ("_gate", "_released", "key")

    def __init__(self, gate: ConnectionGate, key: str) -> None:
        self._gate, self.key, self._released = gate, key, False

    def rekey(self, key: str) -> None:
        """Charge the connection to `key` instead (TooManyConnectionsError, unchanged, when it is full)."""
        if self._released or key == self.key:
            return
        self._gate._check(key, new=False)
        self._gate._remove(self.key)
        self._gate._add(key)
        self.key = key

    def release(self) -> None:
        """Give the place back (only the first call counts)."""
        if not self._released:
            self._released = True
            self._gate._remove(self.key)
