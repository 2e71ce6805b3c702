"""The profile sorts each py-spy sample into the part of the write path on its stack."""

from __future__ import annotations

from collections import Counter

from bench.profile import LOOP, OTHER, classify, shares

LOOP_ONLY = "<module> (faust/__main__.py:6);Worker.execute_from_commandline (mode/worker.py:264)"


def test_a_sample_goes_to_the_first_part_on_its_stack() -> None:
    standby = f"{LOOP_ONLY};StandbyFollower.run (runtime/standby.py:84);PartitionStore.apply (tables/ledger.py:115)"
    checkpoint = f"{LOOP_ONLY};Group._commit_together (commit.py:281);KafkaSession.checkpoint (kafka_session.py:158)"
    rules = f"{LOOP_ONLY};Pipeline.add (commit.py:341);process_batch (ledger.py:300);_Batch.transfer (ledger.py:400)"
    assert classify(standby) == "standby: fetch, unpack, store writes"
    assert classify(checkpoint) == "owner's store writes (checkpoint)"
    assert classify(rules) == "money rules (process_batch)"
    assert classify(LOOP_ONLY) == LOOP
    assert classify(f"{LOOP_ONLY};Pipeline._commit (commit.py:413)") == OTHER


def test_shares_add_up_to_one_largest_first() -> None:
    samples = Counter({LOOP_ONLY: 1, f"{LOOP_ONLY};process_batch (ledger.py:1)": 3})
    assert shares(samples) == {"money rules (process_batch)": 0.75, LOOP: 0.25}
