"""How long this worker is sure to still be a member of the consumer group, and so to own its partitions.

The coordinator keeps a member for the session timeout after the last heartbeat (or join) it accepted. A worker
cut off from the broker hears nothing and goes on believing it owns its partitions while another worker takes
them over; its stores then fall behind, and reads from them would answer stale balances, or 404 for a transaction
the new owner applied. So reads of local partitions, and readiness, need a lease: a request the coordinator
accepted, sent at time t, keeps this member in the group at least until t + session timeout (less a margin).
"""

from __future__ import annotations

import time

from payments_app.runtime.txn_offsets import GroupMember

#: taken off the lease, for the time between our clock reading and the coordinator's
MARGIN_S = 1.0


class GroupLease:
    def __init__(self, session_timeout_s: float) -> None:
        self.session_timeout_s = session_timeout_s
        self.expires_at = 0.0  # monotonic; nothing is held before the first join
        self.member: GroupMember | None = None  # of the last completed join: whom the assignment was given to

    def renewed(self, sent_at: float) -> None:
        """The coordinator accepted a request sent at `sent_at` (time.monotonic())."""
        self.expires_at = max(self.expires_at, sent_at + self.session_timeout_s - MARGIN_S)

    def joined(self, member: GroupMember, sent_at: float) -> None:
        """A join completed: `member` holds the assignment it brought, from now until the group moves on."""
        self.member = member
        self.renewed(sent_at)

    def held(self) -> bool:
        return time.monotonic() < self.expires_at
