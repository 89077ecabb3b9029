#!/usr/bin/env bash
# One-shot trainer (compose `trainer` service, Kubernetes Job `vrae-train`): writes $MODEL_PATH.
#   TRAIN_CSV     long CSV to train on; empty: synthetic sensors from `vrae synth --clean`
#   TRAIN_PRESET  vrae preset (default: default)     TRAIN_EPOCHS  cap on epochs (default 8)
#   TRAIN_WINDOW  window length T (default 24)       TRAIN_STRIDE  stride between windows (default 4)
#   FORCE_TRAIN=1 retrain over an existing model
#   SYNTH_SERIES / SYNTH_LENGTH / SYNTH_INTERVAL_MS  shape of the synthetic history
# The artifact is written beside the target and renamed into place, so a worker never loads half a file.
set -euo pipefail

MODEL_PATH="${MODEL_PATH:-/models/model.pt}"
TRAIN_CSV="${TRAIN_CSV:-}"

if [[ -s "$MODEL_PATH" && "${FORCE_TRAIN:-0}" != "1" ]]; then
    echo "model already at $MODEL_PATH; set FORCE_TRAIN=1 to retrain"
    vrae info "$MODEL_PATH"
    exit 0
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

if [[ -z "$TRAIN_CSV" ]]; then
    TRAIN_CSV="$workdir/synthetic.csv"
    vrae synth --out "$TRAIN_CSV" --clean --seed 0 \
        --series "${SYNTH_SERIES:-10}" --length "${SYNTH_LENGTH:-2000}" --interval-ms "${SYNTH_INTERVAL_MS:-60000}"
elif [[ ! -f "$TRAIN_CSV" ]]; then
    echo "TRAIN_CSV=$TRAIN_CSV: no such file; put the CSV in ./data and set TRAIN_CSV=/data/<name>.csv" >&2
    exit 2
fi

partial="$(dirname "$MODEL_PATH")/.partial-$(basename "$MODEL_PATH")"
vrae train --data "$TRAIN_CSV" --out "$partial" --quiet \
    --preset "${TRAIN_PRESET:-default}" --window "${TRAIN_WINDOW:-24}" --stride "${TRAIN_STRIDE:-4}" \
    --epochs "${TRAIN_EPOCHS:-8}"
mv -f "${partial%.pt}.ckpt" "${MODEL_PATH%.pt}.ckpt"
# Readable by any worker uid (Kubernetes fsGroup setups, a different compose user).
chmod 0644 "$partial"
mv -f "$partial" "$MODEL_PATH"
vrae info "$MODEL_PATH"
