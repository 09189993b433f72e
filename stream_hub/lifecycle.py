"""Lifecycle of one WebSocket client: connecting → authenticated → subscribed → closed.

Transitions are checked: an illegal one raises `IllegalTransitionError` (a bug, not a client error;
the same class as an illegal run-status transition). The current state's `value` is meant to be
used as a metric label.

    connecting ──► authenticated ──► subscribed
        │                │               │
        └────────────────┴───────────────┴──► closed
"""

from __future__ import annotations

import enum

from engine_live.errors import IllegalTransitionError

__all__ = ["ClientLifecycle", "ClientState"]


class ClientState(enum.Enum):
    """Where a stream client is in its session."""

    CONNECTING = "connecting"
    AUTHENTICATED = "authenticated"
    SUBSCRIBED = "subscribed"
    CLOSED = "closed"


_ALLOWED: dict[ClientState, frozenset[ClientState]] = {
    ClientState.CONNECTING: frozenset({ClientState.AUTHENTICATED, ClientState.CLOSED}),
    ClientState.AUTHENTICATED: frozenset({ClientState.SUBSCRIBED, ClientState.CLOSED}),
    ClientState.SUBSCRIBED: frozenset({ClientState.CLOSED}),
    ClientState.CLOSED: frozenset(),
}


class ClientLifecycle:
    """The state of one client; `advance` is the only way to change it."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = ClientState.CONNECTING

    @property
    def state(self) -> ClientState:
        """The current state."""
        return self._state

    def advance(self, target: ClientState) -> None:
        """Move to `target`, or IllegalTransitionError when the state machine does not allow it."""
        current = self._state
        if target not in _ALLOWED[current]:
            raise IllegalTransitionError(
                f"illegal client transition {current.value} -> {target.value}",
                current=current.value,
                requested=target.value,
            )
        self._state = target

    def close(self) -> None:
        """Move to CLOSED from any state; closing twice is a no-op (cleanup paths may overlap)."""
        if self._state is not ClientState.CLOSED:
            self.advance(ClientState.CLOSED)
