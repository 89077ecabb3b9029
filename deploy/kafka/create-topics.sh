#!/usr/bin/env bash
# Creates the worker's topics once; safe to re-run (--if-not-exists). Runs in the apache/kafka image.
# The input topic's partition count caps how many workers can share the load: one partition is
# consumed by one worker of the group at a time.
set -euo pipefail

KAFKA_BIN=/opt/kafka/bin
: "${BOOTSTRAP_SERVERS:?}" "${INPUT_TOPIC:?}" "${ALERT_TOPIC:?}" "${DLQ_TOPIC:?}"
INPUT_PARTITIONS="${INPUT_PARTITIONS:-6}"
REPLICATION_FACTOR="${REPLICATION_FACTOR:-1}"

create_topic() {
    local name="$1" partitions="$2"
    shift 2
    "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP_SERVERS" --create --if-not-exists \
        --topic "$name" --partitions "$partitions" --replication-factor "$REPLICATION_FACTOR" "$@"
}

create_topic "$INPUT_TOPIC" "$INPUT_PARTITIONS" --config retention.ms=86400000
create_topic "$ALERT_TOPIC" 3 --config retention.ms=604800000
# Dead letters are kept for a month: they are the evidence for fixing a producer.
create_topic "$DLQ_TOPIC" 1 --config retention.ms=2592000000

"$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP_SERVERS" --describe \
    --topic "$INPUT_TOPIC" | head -n 1
