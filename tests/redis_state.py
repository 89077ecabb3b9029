"""What tests compare of the Redis state between a run with faults and one without."""

import redis

from worker.state.scripts import REGISTERED_BYTES


def state_snapshot(client: redis.Redis, prefix: str = "vrae") -> dict[bytes, bytes]:
    """Every series' window and detector state, comparable between runs: the window state's registration
    time (when the series registry counts it until) is zeroed, as it depends on the clock, not the stream."""
    snapshot = {}
    for key in client.scan_iter(f"{prefix}:*:{{*}}"):
        value = bytearray(client.get(key))
        if key.startswith(f"{prefix}:win:".encode()):
            value[REGISTERED_BYTES] = bytes(REGISTERED_BYTES.stop - REGISTERED_BYTES.start)
        snapshot[key] = bytes(value)
    return snapshot
