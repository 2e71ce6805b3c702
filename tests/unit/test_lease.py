"""The group lease: reads of local partitions stop once the group may have given them to another worker."""

from __future__ import annotations

import time

from payments_app.runtime.lease import MARGIN_S, GroupLease


def test_nothing_is_held_before_the_first_join() -> None:
    assert not GroupLease(10.0).held()


def test_an_accepted_heartbeat_holds_the_lease_for_the_session_timeout_less_the_margin_from_its_sending() -> None:
    lease = GroupLease(10.0)
    now = time.monotonic()
    lease.renewed(now)
    assert lease.held() and lease.expires_at == now + 10.0 - MARGIN_S
    lease.renewed(now - 9.5)  # an older heartbeat answered late never shortens the lease
    assert lease.expires_at == now + 10.0 - MARGIN_S
    stale = GroupLease(10.0)
    stale.renewed(now - 9.5)
    assert not stale.held()
