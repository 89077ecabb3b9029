"""Hot model swap: pick up a new `model.pt` at the configured path without restarting the worker.

Retraining is one command (`vrae train history.csv --out model.pt`); the worker notices the file
changed (mtime, size or inode; checked at most every `check_interval_s`), loads and verifies it
COMPLETELY on the side, and only then replaces the model reference. The check runs between batches
on the loop's own thread, so a batch is scored by exactly one model from its first window to its
last, and never by a half-loaded one.

Verification: the artifact must load (TorchScript, metadata, format version: `load_artifact`), its
sha256 must match when one is expected, and its window length and features must equal the running
model's (the window store and the event parser are built for them: changing either needs a restart).
The expected sha256 is read from `<path>.sha256` when that file exists (a change of either file
triggers a check, so the order in which the two are replaced does not matter), else from
VRAE_MODEL__SHA256; with a pinned sha256 and no sidecar every other
file is refused. On any failure the old model keeps serving, the failure is logged and counted, and
the same broken file is not retried until it changes again.

Per-series score history is kept per model: on a swap every series' history restarts (see
`worker.detection.calibration.for_model`), open incidents stay open.
"""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from vrae_model.exceptions import VraeError
from worker.scorer import ModelInfo, Scorer, Scores

log = logging.getLogger("worker.model")


class ReloadOutcome(StrEnum):
    """What one check did; the value is a metrics label."""

    UNCHANGED = "unchanged"
    SWAPPED = "swapped"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Reload:
    outcome: ReloadOutcome
    detail: str = ""
    previous: ModelInfo | None = None
    current: ModelInfo | None = None


@dataclass(frozen=True)
class FileStamp:
    mtime_ns: int
    size: int
    inode: int


def stamp_of(path: Path) -> FileStamp | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return FileStamp(stat.st_mtime_ns, stat.st_size, stat.st_ino)


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def expected_sha256(path: Path, configured: str | None) -> str | None:
    """The digest a new file must have: the `<path>.sha256` sidecar's first word, else the setting."""
    try:
        words = sidecar_of(path).read_text().split()
    except OSError:
        return configured
    return words[0] if words else configured


Loader = Callable[[Path, str | None], Scorer]


class ReloadingScorer:
    """The pipeline's scorer: delegates to the current model; `maybe_reload()` may replace it."""

    def __init__(self, scorer: Scorer, path: Path, loader: Loader, *, sha256: str | None = None,
                 check_interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._current = scorer
        self._path = Path(path)
        self._loader = loader
        self._sha256 = sha256
        self._interval_s = check_interval_s
        self._clock = clock
        self._stamp = self._stamps()
        self._checked_at = clock()

    @property
    def info(self) -> ModelInfo:
        return self._current.info

    def score(self, windows: np.ndarray) -> Scores:
        return self._current.score(windows)

    def _stamps(self) -> tuple[FileStamp | None, FileStamp | None]:
        # The sidecar counts too: a model refused for a stale sidecar is retried once the sidecar is updated.
        return stamp_of(self._path), stamp_of(sidecar_of(self._path))

    def maybe_reload(self) -> Reload:
        """Between batches only: swap in the file at the path if it changed and passes verification."""
        now = self._clock()
        if now - self._checked_at < self._interval_s:
            return Reload(ReloadOutcome.UNCHANGED)
        self._checked_at = now
        stamp = self._stamps()
        if stamp[0] is None or stamp == self._stamp:
            return Reload(ReloadOutcome.UNCHANGED)
        self._stamp = stamp  # a file that fails is not retried until it changes again
        previous = self._current.info
        try:
            candidate = self._loader(self._path, expected_sha256(self._path, self._sha256))
        except VraeError as error:
            return Reload(ReloadOutcome.REJECTED, str(error), previous)
        problem = incompatibility(previous, candidate.info)
        if problem:
            return Reload(ReloadOutcome.REJECTED, problem, previous)
        if candidate.info.sha256 == previous.sha256:
            return Reload(ReloadOutcome.UNCHANGED)
        self._current = candidate
        return Reload(ReloadOutcome.SWAPPED, "", previous, candidate.info)


def incompatibility(running: ModelInfo, candidate: ModelInfo) -> str:
    """Why `candidate` cannot replace `running` in a live worker ('' when it can)."""
    if candidate.window != running.window:
        return (f"window {candidate.window} differs from the running model's {running.window}; "
                "restart the worker to change the window")
    if candidate.features != running.features:
        return (f"features {', '.join(candidate.features)} differ from the running model's "
                f"{', '.join(running.features)}; restart the worker to change them")
    return ""


def log_reload(reload: Reload) -> None:
    """One log line per swap or refusal (nothing for an unchanged file)."""
    if reload.outcome is ReloadOutcome.SWAPPED and reload.previous and reload.current:
        log.info("model swapped", extra={"from_version": reload.previous.version, "to_version": reload.current.version,
                                         "sha256": reload.current.sha256})
    elif reload.outcome is ReloadOutcome.REJECTED:
        log.warning("new model file refused; the running model keeps serving",
                    extra={"error": reload.detail, "version": reload.previous.version if reload.previous else None})
