"""Prints the worker's alerts as they arrive, one line each, for the compose demo.

Reads the alert topic named by the worker's own VRAE_KAFKA__* settings (TLS/SASL included), from
the newest alert on, in no consumer group: several printers never steal alerts from each other.

    python deploy/alert_printer.py [--from-beginning]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence

log = logging.getLogger("vrae.alerts")


def format_alert(alert: Mapping[str, object]) -> str:
    """One line per alert (schema: worker/schemas/alert.schema.json), most useful fields first."""
    top = " ".join(f"{item['name']}={item['share']:.0%}" for item in alert.get("top_features", []))
    return (f"{alert.get('window_end_iso', '?')}  {alert.get('series_id', '?')}  "
            f"anomaly_score={alert.get('anomaly_score', float('nan')):.4f}  top: {top or '-'}  "
            f"id={alert.get('alert_id', '-')}")


def decode_alert(value: bytes) -> Mapping[str, object] | None:
    """The alert as a mapping, or None for a record that is not a JSON object (logged, skipped)."""
    try:
        alert = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return None
    return alert if isinstance(alert, Mapping) else None


def main(argv: Sequence[str] | None = None) -> int:
    from kafka import KafkaConsumer

    from worker.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from-beginning", action="store_true", help="print the alerts already in the topic too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    kafka = Settings().kafka
    consumer = KafkaConsumer(kafka.alert_topic, bootstrap_servers=kafka.bootstrap_servers, group_id=None,
                             client_id="vrae-alert-printer", enable_auto_commit=False,
                             auto_offset_reset="earliest" if args.from_beginning else "latest",
                             **kafka.security_config())
    log.info("waiting for alerts on %s", kafka.alert_topic)
    try:
        for record in consumer:
            alert = decode_alert(record.value)
            log.info(format_alert(alert) if alert is not None else f"not an alert: {record.value[:200]!r}")
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.close()
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """main() with its failures as one line on stderr and exit code 2, like every vrae command."""
    from kafka.errors import KafkaError
    from pydantic import ValidationError

    from worker.config import describe_invalid_setting

    try:
        return main(argv)
    except ValidationError as error:
        print(f"alert-printer: {describe_invalid_setting(error)}", file=sys.stderr)
    except KafkaError as error:
        print(f"alert-printer: {error}; check VRAE_KAFKA__BOOTSTRAP_SERVERS and that the broker is up", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(run())
