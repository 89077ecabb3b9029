"""Due windows with chosen scores, for tests of the per-series detector (unit and against Redis)."""

from collections.abc import Sequence

import numpy as np

from worker.events import Event, SourceRecord
from worker.scorer import Scores
from worker.windows import DueWindow


def scored_windows(series: str, first: int, scores: list[float],
                   shares: Sequence[float] = (0.3, 0.7)) -> tuple[list[DueWindow], Scores]:
    """Consecutive 4-step, 2-feature windows of one series ending at offsets `first`, `first + 1`, ...

    Window i ends at 1000 * (first + i) ms and scores `scores[i]`; every window splits its error by `shares`.
    """
    windows = []
    for i in range(len(scores)):
        end = 1000 * (first + i)
        event = Event(series, end, np.zeros(2, np.float32), SourceRecord("events", 0, first + i, None, b""))
        windows.append(DueWindow(series, end - 3000, end, np.zeros((4, 2), np.float32), event))
    n = len(scores)
    return windows, Scores(score=np.array(scores, np.float32), anomaly_score=np.full(n, 0.5, np.float32),
                           feature_shares=np.tile(np.asarray(shares, np.float32), (n, 1)))
