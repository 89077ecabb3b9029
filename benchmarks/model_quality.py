"""Detection quality of the `default` preset, next to simple baselines, on data we can ship.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/model_quality.py   # ECG5000 + synthetic fleet (~6 min)
    .venv/bin/python benchmarks/model_quality.py --skip-synth

ECG5000 (UCR, class 1 = normal beat): train on 70% of the normal beats (seeded), score the held-out
normal beats against every abnormal beat -> AUC-ROC, beside a 2-component PCA reconstruction baseline
fitted on the same beats; k-means on the latent means of all beats -> adjusted Rand index vs classes.

Synthetic fleet (vrae_model.synth): train on a clean history of the machines, then score a later,
labelled stream of the same machines window by window, exactly as the worker would (stride 1). An
anomaly event counts as detected if a due window ending inside its span, or within one window length
after its start, alerts. False alarms: alerting windows that hold no anomalous event and credit no
event, per 10,000 such windows.

Prints `name=value` lines at the end, for the README table and for comparing runs.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, roc_auc_score

from vrae_model.artifact import load_artifact
from vrae_model.data import WindowSet, load_windows
from vrae_model.scoring import score_windows
from vrae_model.training import train
from vrae_model.windowing import due_positions

ECG_PATH = Path("/work/shared/data/ecg5000/ECG5000_TRAIN.txt")
SYNTH_WINDOW = 32


def ecg_quality(path: Path, workdir: Path, preset: str, seed: int) -> dict[str, float]:
    beats = load_windows(path)
    normal = np.flatnonzero(beats.labels == 1)
    shuffled = np.random.default_rng(seed).permutation(normal)
    n_train = int(0.7 * len(normal))
    train_index, held_out = shuffled[:n_train], shuffled[n_train:]
    test_index = np.concatenate([held_out, np.flatnonzero(beats.labels != 1)])
    is_abnormal = beats.labels[test_index] != 1

    started = time.perf_counter()
    result = train(
        WindowSet(beats.windows[train_index], beats.feature_names), preset, out=workdir / "ecg.pt", progress_bar=False,
        overrides={"seed": seed},
    )
    train_s = time.perf_counter() - started
    artifact = load_artifact(result.artifact_path)
    scores = score_windows(artifact, beats.windows[test_index])["score"]

    flat = beats.windows[:, :, 0]
    pca = PCA(n_components=2).fit(flat[train_index])
    pca_error = ((pca.inverse_transform(pca.transform(flat[test_index])) - flat[test_index]) ** 2).mean(axis=1)

    with torch.inference_mode():
        latents = artifact.module.embed(torch.from_numpy(beats.windows)).numpy()
    n_classes = len(np.unique(beats.labels))
    ari = {
        k: adjusted_rand_score(beats.labels, KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(latents))
        for k in sorted({2, n_classes})
    }
    return {
        "ecg_vrae_auc": roc_auc_score(is_abnormal, scores),
        "ecg_pca2_auc": roc_auc_score(is_abnormal, pca_error),
        **{f"ecg_kmeans{k}_ari": value for k, value in ari.items()},
        "ecg_epochs": float(result.metrics["epochs_trained"]),
        "ecg_train_s": train_s,
    }


def synth_quality(
    workdir: Path, preset: str, seed: int, n_series: int, history_days: int, train_stride: int
) -> dict[str, float]:
    from vrae_model.synth import DEFAULT_START_MS, SynthConfig, generate, write_csv

    history_events, stream_events = history_days * 1440, 2 * 1440  # one event a minute
    history = SynthConfig(n_series=n_series, length=history_events, clean=True, seed=seed)
    stream = SynthConfig(
        n_series=n_series,
        length=stream_events,
        anomalies_per_series=3,
        seed=seed,  # same seed: the same machines, later in time, with fresh noise
        start_ms=DEFAULT_START_MS + history_events * history.interval_ms,
    )
    history_csv = write_csv(generate(history), workdir / "history.csv")
    started = time.perf_counter()
    result = train(
        load_windows(history_csv, window=SYNTH_WINDOW, stride=train_stride), preset, out=workdir / "synth.pt",
        progress_bar=False, overrides={"seed": seed},
    )
    train_s = time.perf_counter() - started
    artifact = load_artifact(result.artifact_path)

    live = generate(stream)
    scored = load_windows(write_csv(live, workdir / "stream.csv"), window=SYNTH_WINDOW, stride=1)
    alerts = score_windows(artifact, scored.windows)["is_anomaly"]
    detected = events = false_alarms = clean_windows = 0
    for one in live.series:
        ends = due_positions(len(one.timestamps), SYNTH_WINDOW, 1)  # the order load_windows cut them in
        alert = alerts[scored.series_ids == one.series_id]
        credited = np.zeros(len(ends), dtype=bool)
        for start, stop, _, _ in one.anomalies:
            in_range = (ends >= start) & (ends < max(stop, start + SYNTH_WINDOW))
            credited |= in_range
            events += 1
            detected += bool(alert[in_range].any())
        # a window is clean when none of its events is labelled
        labelled_in_window = np.convolve(one.labels.astype(np.int64), np.ones(SYNTH_WINDOW, dtype=np.int64))[ends]
        clean = (labelled_in_window == 0) & ~credited
        clean_windows += int(clean.sum())
        false_alarms += int((alert & clean).sum())
    return {
        "synth_event_recall": detected / max(events, 1),
        "synth_events": float(events),
        "synth_false_alarms_per_10k_windows": 1e4 * false_alarms / max(clean_windows, 1),
        "synth_clean_windows": float(clean_windows),
        "synth_train_s": train_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ecg", type=Path, default=ECG_PATH)
    parser.add_argument("--synth-series", type=int, default=8)
    parser.add_argument("--history-days", type=int, default=7, help="clean history the synthetic model trains on")
    parser.add_argument("--train-stride", type=int, default=8, help="stride of the synthetic training windows")
    parser.add_argument("--skip-ecg", action="store_true")
    parser.add_argument("--skip-synth", action="store_true")
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="vrae-quality-") as scratch:
        workdir = Path(scratch)
        if not args.skip_ecg:
            results.update(ecg_quality(args.ecg, workdir, args.preset, args.seed))
        if not args.skip_synth:
            results.update(
                synth_quality(workdir, args.preset, args.seed, args.synth_series, args.history_days, args.train_stride)
            )
    if "ecg_vrae_auc" in results:
        results["ecg_vrae_over_pca_auc_ratio"] = results["ecg_vrae_auc"] / results["ecg_pca2_auc"]
    for name, value in results.items():
        print(f"{name}={value:.4f}")


if __name__ == "__main__":
    main()
