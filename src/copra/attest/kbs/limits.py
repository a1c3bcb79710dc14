"""The key broker server's limits, apart from the server so the CLI reads them cheaply.

See :class:`ServerLimits`; :mod:`copra.attest.kbs.app` enforces them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: The largest request body: larger ones are refused with 413 before they are read.
MAX_BODY: Final = 1 << 20


@dataclass(frozen=True)
class ServerLimits:
    """How much of the broker one peer, or a flood of them, can hold (docs/dependencies.md
    says why waitress; docs/attestation-protocol.md, "Connections", what each bounds).

    ``max_connections`` open at once; when they are all open, accepting one more
    closes the oldest connection that has no request being executed (a flood cannot
    keep ``/auth`` waiting, as the session table evicts the oldest un-attested
    session). ``threads`` run the app; requests are read and replies written by one
    event loop, so a slow peer holds a connection slot, never a thread. A connection
    with nothing in flight is closed after ``idle_timeout`` seconds of silence, and a
    request must arrive whole within ``request_timeout`` of its first byte, however
    it trickles. Headers are capped at ``max_header_size`` and bodies at
    :data:`MAX_BODY` (413 before the body is read, when declared); a body is buffered
    in memory, so the server holds at most about ``max_connections`` x
    (``max_header_size`` + :data:`MAX_BODY`) of requests.
    """

    max_connections: int = 64
    threads: int = 4
    idle_timeout: float = 10.0
    request_timeout: float = 10.0
    max_header_size: int = 64 << 10

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.threads < 1:
            raise ValueError("max_connections and threads must be at least 1")
        if not min(self.idle_timeout, self.request_timeout) > 0:
            raise ValueError("timeouts must be positive")
