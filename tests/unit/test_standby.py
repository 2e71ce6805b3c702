"""Which partitions a worker follows as a standby replica."""

from __future__ import annotations

from payments_app.runtime.standby import standby_partitions

A, B, C = "http://a", "http://b", "http://c"


def test_with_two_workers_each_follows_the_others_partitions() -> None:
    owners = {0: A, 1: B, 2: A, 3: B}
    assert standby_partitions(owners, A, 1) == {1, 3}
    assert standby_partitions(owners, B, 1) == {0, 2}


def test_each_partition_has_exactly_the_requested_number_of_standbys() -> None:
    owners = {p: (A, B, C)[p % 3] for p in range(9)}
    for replicas in (1, 2):
        followers = {p: [m for m in (A, B, C) if p in standby_partitions(owners, m, replicas)] for p in owners}
        assert all(len(f) == replicas and owners[p] not in f for p, f in followers.items())


def test_no_standbys_when_none_are_asked_for_or_the_worker_is_alone() -> None:
    assert standby_partitions({0: A, 1: B}, A, 0) == set()
    assert standby_partitions({0: A, 1: A}, A, 1) == set()
