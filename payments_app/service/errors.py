"""Why the service could not answer now, by name; the web edge turns each into its HTTP status.

They are signals, not bugs: a `KeyError` or `IndexError` is neither of them, so an ordinary bug is never retried as
if a partition had moved.
"""

from __future__ import annotations


class NotOwner(Exception):
    """The partition is not (or no longer) open on this worker: ask its owner, or again after the rebalance."""


class Backlogged(Exception):
    """Too many submissions wait for a decision at the partition's owner: retry later (HTTP 429)."""


class Unavailable(Exception):
    """No worker answers for a partition now (start-up, a rebalance, or this worker lost touch with the group):
    retry later (HTTP 503)."""
