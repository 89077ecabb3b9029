"""Collect event-to-alert latencies in a process of its own: `receive ms - window_end` per alert.

A separate, light process (no torch import) so decoding alerts never competes with the producer's
pacing for one GIL. It prints `ready` once it is positioned on the topic, and stops once no alert has
arrived for `--idle-seconds` after the first one (or at `--timeout-seconds`), saving an int64 .npy.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, TopicPartition


def collect(bootstrap: str, topic: str, idle_s: float, timeout_s: float) -> np.ndarray:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10,
                             max_poll_records=5000)
    tp = TopicPartition(topic, 0)
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        consumer.poll(timeout_ms=100)
        print("ready", flush=True)
        latencies: list[int] = []
        deadline = time.monotonic() + timeout_s
        last_alert = None
        while time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=50)
            received_ms = time.time_ns() // 1_000_000
            now = time.monotonic()
            for records in batches.values():
                for record in records:
                    latencies.append(received_ms - json.loads(record.value)["window_end"])
                last_alert = now
            if last_alert is not None and now - last_alert > idle_s:
                break
    finally:
        consumer.close()
    return np.asarray(latencies, dtype=np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("out", type=Path)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--timeout-seconds", type=float, default=600.0)
    args = parser.parse_args()
    np.save(args.out, collect(args.bootstrap, args.topic, args.idle_seconds, args.timeout_seconds))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
