"""Records that once stopped a partition for good (issue 21), and the dead-letter reason each must get.

Shared by the parser's unit tests, the worker's test against the real broker and the fuzz test, so the
three always try the same poison. Keys and values are raw Kafka bytes, for a model with the tiny test
model's features.
"""

from typing import NamedTuple

from fixtures.make_tiny_model import FEATURES  # noqa: F401 (re-exported: the poison is written for these features)

from worker.events import InvalidReason

DEEP = 5_000  # nesting levels: far past the interpreter's recursion limit (1,000)


class Poison(NamedTuple):
    name: str
    key: bytes | None
    value: bytes | None
    reason: InvalidReason


def _event(body: bytes) -> bytes:
    return b'{"series_id": "pump-7", "ts": 1763942400000, ' + body + b"}"


POISON = (
    Poison("null-key-and-value", None, None, InvalidReason.EMPTY),
    Poison("deep-open-brackets", b"pump-7", b"[" * DEEP, InvalidReason.NOT_JSON),
    Poison("deep-balanced-list", None, b"[" * DEEP + b"]" * DEEP, InvalidReason.NOT_JSON),
    Poison("deep-inside-values", b"pump-7", _event(b'"values": ' + b"[" * DEEP + b"]" * DEEP),
           InvalidReason.NOT_JSON),
    Poison("deep-inside-features", b"pump-7",
           _event(b'"features": {"temp": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}"),
           InvalidReason.NOT_JSON),
    # Short of the decoder's limit it parses, and nothing after the decoder may recurse into it.
    Poison("nested-900-inside-values", b"pump-7", _event(b'"values": [1, ' + b"[" * 900 + b"]" * 900 + b"]"),
           InvalidReason.WRONG_TYPE),
    Poison("lone-surrogate-series-id-null-key", None,
           b'{"series_id": "\\ud800", "ts": 1763942400000, "values": [1, 2]}', InvalidReason.BAD_SERIES_ID),
    Poison("lone-surrogate-series-id-keyed", b"\xed\xa0\x80",
           b'{"series_id": "\\ud800", "ts": 1763942400000, "values": [1, 2]}', InvalidReason.BAD_SERIES_ID),
    Poison("lone-surrogate-in-series-id-other-key", b"pump-7",
           b'{"series_id": "pump-\\udfff", "ts": 1763942400000, "values": [1, 2]}', InvalidReason.BAD_SERIES_ID),
    Poison("lone-surrogate-feature-name", b"pump-7",
           _event(b'"features": {"temp": 1, "pressure": 2, "\\ud800": 3}'), InvalidReason.UNKNOWN_FEATURE),
    Poison("lone-surrogate-timestamp", b"pump-7",
           b'{"series_id": "pump-7", "ts": "\\ud800", "values": [1, 2]}', InvalidReason.BAD_TIMESTAMP),
    Poison("one-and-a-half-megabytes", b"pump-7", b"x" * 1_500_000, InvalidReason.OVERSIZED),
    Poison("two-megabytes-of-json", None, _event(b'"values": [1, 2], "pad": "' + b"x" * 2_000_000 + b'"'),
           InvalidReason.OVERSIZED),
    Poison("two-megabyte-key", b"k" * 2_000_000, _event(b'"values": [1, 2]'), InvalidReason.KEY_MISMATCH),
)
