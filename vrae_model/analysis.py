"""Exploring a trained model: latent embeddings, clusters, 2-D maps, generated series and plots.

scikit-learn and matplotlib are the optional `analysis` extra, so they are imported inside the
functions that need them; figures are drawn on an Agg canvas, never through pyplot, so nothing here
touches matplotlib's process-wide backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vrae_model.exceptions import DataError, VraeError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from vrae_model.artifact import Artifact

REDUCE_METHODS = ("pca", "tsne")
LATENT_SOURCES = ("prior", "posterior")
_INSTALL_HINT = "pip install 'vrae-stream[analysis]'"


def _require(module: str) -> ModuleType:
    """Import an optional dependency or fail with the one line that says how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        package = "scikit-learn" if top == "sklearn" else top
        raise VraeError(f"{package} is not installed: {_INSTALL_HINT}") from exc


def _batched(method: Callable[[torch.Tensor], torch.Tensor], array: np.ndarray, batch_size: int) -> np.ndarray:
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(array), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(array[start : start + batch_size], dtype=np.float32))
            outputs.append(method(chunk).numpy())
    return np.concatenate(outputs)


def embed(artifact: Artifact, windows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Latent means (N, latent) of raw windows (N, T, F)."""
    return _batched(artifact.module.embed, windows, batch_size)


def reconstruct(artifact: Artifact, windows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Reconstructions (N, T, F) of raw windows, in raw units."""
    return _batched(artifact.module.reconstruct, windows, batch_size)


def cluster(latents: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k-means cluster index (N,) of each latent vector."""
    if not 1 <= k <= len(latents):
        raise DataError(f"--k must be between 1 and the number of windows ({len(latents)}), got {k}")
    kmeans = _require("sklearn.cluster").KMeans(n_clusters=k, n_init="auto", random_state=seed)
    return kmeans.fit_predict(latents).astype(np.int64)


def reduce(latents: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates (N, 2) of latent vectors, for maps."""
    if method not in REDUCE_METHODS:
        raise DataError(f"method must be one of {', '.join(REDUCE_METHODS)}, got {method!r}")
    n, dims = latents.shape
    if n < 2:
        raise DataError(f"a 2-D map needs at least 2 windows, got {n}")
    if dims < 2:
        return np.column_stack([latents[:, 0], np.zeros(n)])
    if method == "pca":
        return _require("sklearn.decomposition").PCA(n_components=2, random_state=seed).fit_transform(latents)
    if n < 5:
        raise DataError(f"t-SNE needs at least 5 windows, got {n}; use --method pca")
    # sklearn requires perplexity < n; 30 is its default for anything but tiny inputs
    perplexity = min(30.0, (n - 1) / 3)
    tsne = _require("sklearn.manifold").TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(latents)


def sample_latents(
    n: int, latent_size: int, source: str = "prior", latents: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """n latent vectors from the prior N(0, I) or from a Gaussian fitted to the latents of real data.

    The posterior option exists because a VRAE's aggregate posterior rarely fills the prior: decoding
    prior samples shows what the decoder can do, decoding posterior-fitted samples shows data-like series.
    """
    if n < 1:
        raise DataError(f"--n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    if source == "prior":
        return rng.standard_normal((n, latent_size)).astype(np.float32)
    if source != "posterior":
        raise DataError(f"source must be one of {', '.join(LATENT_SOURCES)}, got {source!r}")
    if latents is None or len(latents) < 2:
        raise DataError("--source posterior needs --data with at least 2 windows to fit the latent Gaussian")
    mean = latents.mean(axis=0)
    # a little ridge keeps the covariance positive definite when there are fewer windows than dimensions
    cov = np.cov(latents, rowvar=False).reshape(latent_size, latent_size) + 1e-6 * np.eye(latent_size)
    return rng.multivariate_normal(mean, cov, size=n, method="eigh").astype(np.float32)


def generate(artifact: Artifact, latents: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Decode latent vectors (n, latent) into series (n, T, F) in raw units."""
    return _batched(artifact.module.decode, latents, batch_size)


def latent_size(artifact: Artifact) -> int:
    return int(artifact.metadata["model_config"]["latent_length"])


def pick_examples(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the worst-scoring windows and of typical (median-scoring) ones, half each."""
    order = np.argsort(scores, kind="stable")
    n = min(n, len(scores))
    worst = order[::-1][: (n + 1) // 2]
    by_distance_to_median = order[np.argsort(np.abs(np.arange(len(order)) - len(order) // 2), kind="stable")]
    typical = by_distance_to_median[~np.isin(by_distance_to_median, worst)][: n - len(worst)]
    return np.concatenate([worst, typical]).astype(np.int64)


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    figure_module = _require("matplotlib.figure")
    backend = _require("matplotlib.backends.backend_agg")
    figure = figure_module.Figure(figsize=(width, height), layout="constrained")
    backend.FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False, **kwargs)
    return figure, axes


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def plot_map(
    coords: np.ndarray,
    path: str | Path,
    *,
    groups: np.ndarray | None = None,
    values: np.ndarray | None = None,
    title: str = "latent map",
    legend_title: str = "cluster",
) -> Path:
    """Scatter of 2-D coordinates, coloured by a categorical `groups` or a continuous `values`."""
    figure, axes = _figure(7, 6)
    ax = axes[0, 0]
    if groups is not None:
        names, sizes = np.unique(groups, return_counts=True)
        for group in names[np.argsort(-sizes, kind="stable")]:  # largest first, so rare groups stay visible
            mask = groups == group
            ax.scatter(coords[mask, 0], coords[mask, 1], s=8, alpha=0.7, label=str(group))
        ax.legend(title=legend_title, markerscale=2, fontsize="small")
    elif values is not None:
        points = ax.scatter(coords[:, 0], coords[:, 1], s=8, alpha=0.8, c=values, cmap="viridis")
        figure.colorbar(points, ax=ax, label=legend_title)
    else:
        ax.scatter(coords[:, 0], coords[:, 1], s=8, alpha=0.7)
    ax.set_title(title)
    ax.set_xlabel("dimension 1")
    ax.set_ylabel("dimension 2")
    return _save(figure, path)


def plot_reconstructions(
    windows: np.ndarray,
    reconstructions: np.ndarray,
    feature_names: Sequence[str],
    path: str | Path,
    *,
    titles: Sequence[str],
) -> Path:
    """One row per window, one column per feature: input against reconstruction."""
    n, steps, n_features = windows.shape
    figure, axes = _figure(3.2 * n_features + 1, 2.0 * n + 0.6, n, n_features, sharex=True)
    for row in range(n):
        for f in range(n_features):
            ax = axes[row, f]
            ax.plot(np.arange(steps), windows[row, :, f], color="tab:blue", lw=1.2, label="input")
            ax.plot(np.arange(steps), reconstructions[row, :, f], color="tab:orange", lw=1.2, ls="--", label="reconstruction")
            if row == 0:
                ax.set_title(feature_names[f])
            if f == 0:
                ax.set_ylabel(titles[row], fontsize="small")
    axes[0, 0].legend(fontsize="x-small")
    return _save(figure, path)


def plot_timeline(
    x: np.ndarray,
    scores: np.ndarray,
    score_threshold: float,
    path: str | Path,
    *,
    title: str,
    x_label: str,
    values: np.ndarray | None = None,
    feature_names: Sequence[str] = (),
    labels: np.ndarray | None = None,
) -> Path:
    """Raw score over time on a log axis with the alert threshold; alerts marked, labelled windows shaded.

    The raw score, not the calibrated one: calibrated scores crowd into [0.999, 1] exactly where
    alerts happen, while the raw reconstruction error keeps its spread. `values` (n, F) draws the
    features ending each window above the scores, so an alert can be read against its signal.
    """
    rows = 2 if values is not None else 1
    figure, axes = _figure(12, 3.0 * rows + 0.5, rows, 1, sharex=True)
    score_ax = axes[-1, 0]
    if values is not None:
        value_ax = axes[0, 0]
        for f in range(values.shape[1]):
            column = values[:, f]
            spread = column.std() or 1.0
            value_ax.plot(x, (column - column.mean()) / spread, lw=0.7, label=feature_names[f])
        value_ax.set_ylabel("feature (standardised)")
        value_ax.legend(fontsize="small", loc="upper right")
    axes[0, 0].set_title(title)
    score_ax.plot(x, scores, color="tab:blue", lw=0.8, label="score")
    score_ax.axhline(score_threshold, color="tab:red", ls="--", lw=1.0, label=f"threshold {score_threshold:.4g}")
    alerts = scores >= score_threshold
    score_ax.scatter(x[alerts], scores[alerts], color="tab:red", s=12, zorder=3, label=f"alert ({int(alerts.sum())})")
    if labels is not None and labels.any():
        for ax in axes[:, 0]:
            _shade(ax, x, labels)
    if np.all(scores > 0):
        score_ax.set_yscale("log")
    score_ax.set_ylabel("reconstruction error (score)")
    score_ax.set_xlabel(x_label)
    score_ax.legend(fontsize="small", loc="upper left")
    return _save(figure, path)


def _shade(ax: Any, x: np.ndarray, labels: np.ndarray) -> None:
    """Shade each run of labelled windows once (one legend entry)."""
    edges = np.flatnonzero(np.diff(np.r_[0, labels.astype(np.int8), 0]))
    for i, (start, stop) in enumerate(zip(edges[::2], edges[1::2], strict=True)):
        label = "labelled anomaly" if i == 0 else None
        ax.axvspan(x[start], x[stop - 1], color="tab:orange", alpha=0.25, lw=0, label=label)


def plot_series(series: np.ndarray, feature_names: Sequence[str], path: str | Path, *, title: str, max_series: int = 8) -> Path:
    """Generated series: one panel per feature, up to `max_series` samples overlaid."""
    n_features = series.shape[2]
    figure, axes = _figure(10, 2.2 * n_features + 0.6, n_features, 1, sharex=True)
    for f in range(n_features):
        ax = axes[f, 0]
        for sample in series[:max_series]:
            ax.plot(sample[:, f], lw=1.0, alpha=0.8)
        ax.set_ylabel(feature_names[f])
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("step")
    return _save(figure, path)
