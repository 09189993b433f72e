"""Lifecycle of one WebSocket client: connecting → authenticated → subscribed → closed.

Transitions are checked: an illegal one raises `IllegalTransitionError` (a bug, not a client error).
The current state's `value` is meant to be used as a metric label.

    connecting ──► authenticated ──► subscribed
        │                │               │
        └────────────────┴───────────────┴──► closed
"""

from __future__ import annotations

import enum

__all__ = ["ClientLifecycle", "ClientState", "IllegalTransitionError"]


class ClientState(enum.Enum):
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


class IllegalTransitionError(RuntimeError):
    """A lifecycle transition that the state machine does not allow."""

    def __init__(self, current: ClientState, target: ClientState) -> None:
        super().__init__(f"illegal client transition {current.value} -> {target.value}")
        self.current = current
        self.target = target


class ClientLifecycle:
    """The state of one client; `advance` is the only way to change it."""

    __slots__ = ("_state",)

    def __init__(self) -> None:
        self._state = ClientState.CONNECTING

    @property
    def state(self) -> ClientState:
        return self._state

    def advance(self, target: ClientState) -> None:
        if target not in _ALLOWED[self._state]:
            raise IllegalTransitionError(self._state, target)
        self._state = target

    def close(self) -> None:
        """Move to CLOSED from any state; closing twice is a no-op (cleanup paths may overlap)."""
        if self._state is not ClientState.CLOSED:
            self.advance(ClientState.CLOSED)
