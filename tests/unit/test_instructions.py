"""What `bench.instructions` counts under callgrind is the layer's whole work: every transfer applied."""

from __future__ import annotations

import pytest

from bench.common import Progress
from bench.instructions import LAYERS, apply_fresh
from bench.layers import build_workload


@pytest.mark.parametrize("layer", LAYERS)
def test_each_application_applies_every_transfer_into_a_fresh_state(layer: str) -> None:
    workload = build_workload(2_000, 500, Progress("test"))
    assert apply_fresh(workload, layer) == apply_fresh(workload, layer) == workload.count == 2_000
