"""Judging a level grid: the incident machine computed per incident against stepping it per window.

`vrae-worker tune-levels` and the quality harness judge ~130 (open, close) pairs of a statistic;
each pair runs the incident machine over every window. Stepping `worker.detection.incidents.step` window by
window (what `worker.tools.evaluation.incident_openings` did before) costs 0.7 µs (few incidents) to 3 µs
(many) a window per pair in Python: 20 s to minutes per grid for a labelled history of a few hundred
thousand windows. It now jumps from one opening to the next with sorted searches. Both run here on
the same statistic, side by side; the openings must be identical, and the ratio is what to quote (the
machine is shared and noisy).

    python benchmarks/level_grid.py                    # 200,000 windows in 20 series
    python benchmarks/level_grid.py --windows 1000000 --pairs 8
"""

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from worker.detection.incidents import IncidentSettings, IncidentState, Observation, Phase, step
from worker.tools.evaluation import Levels, Stats, incident_openings, level_grid


def stepped_openings(values: np.ndarray, levels: Levels, close_after: int) -> list[int]:
    """The reference: `step` window by window, as the running worker applies it; positions in `values`."""
    settings = IncidentSettings(open_surprise=levels[0], close_surprise=levels[1], close_after=close_after)
    state, found = IncidentState(), []
    no_shares = np.zeros(1)
    for n, value in enumerate(values.tolist()):
        state, transition = step("s", state, Observation(0, n, 0.0, value, no_shares), settings)
        if transition is not None and transition.phase is Phase.OPENED:
            found.append(n)
    return found


def surprise_like(windows: int, series: int, seed: int) -> Stats:
    """A statistic shaped like the worker's surprise: mostly small, autocorrelated, with rare runs."""
    rng = np.random.default_rng(seed)
    values, due = {}, {}
    for k in range(series):
        n = windows // series
        noise = np.convolve(rng.exponential(0.4, n + 5), np.ones(6) / 6, mode="valid")[:n]
        runs = np.zeros(n)
        for start in rng.choice(n, size=max(n // 800, 1), replace=False):
            runs[start:start + int(rng.integers(5, 60))] = rng.uniform(2.0, 6.0)
        values[f"s{k}"], due[f"s{k}"] = noise + runs, np.arange(n)
    return Stats(values, due)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=200_000)
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=6, help="grid pairs timed, spread over the whole grid")
    parser.add_argument("--close-after", type=int, default=5)
    args = parser.parse_args(argv)
    stats = surprise_like(args.windows, args.series, seed=0)
    grid = level_grid(stats)
    pairs = [grid[i] for i in np.linspace(0, len(grid) - 1, args.pairs).astype(int)]
    stepped = per_incident = 0.0
    for levels in pairs:
        started = time.perf_counter()
        reference = {sid: [int(stats.due[sid][i]) for i in stepped_openings(values, levels, args.close_after)]
                     for sid, values in stats.values.items()}
        stepped += time.perf_counter() - started
        started = time.perf_counter()
        fast = incident_openings(stats, levels, args.close_after)
        per_incident += time.perf_counter() - started
        if fast != reference:
            print(f"openings differ at levels {levels}", file=sys.stderr)
            return 1
    windows = sum(len(v) for v in stats.values.values())
    print(f"{windows} windows in {len(stats.values)} series, {len(pairs)} of the grid's {len(grid)} pairs, "
          f"identical openings")
    print(f"stepped per window : {1e6 * stepped / (windows * len(pairs)):8.3f} µs per window and pair")
    print(f"per incident       : {1e6 * per_incident / (windows * len(pairs)):8.3f} µs per window and pair")
    whole = len(grid) / len(pairs)
    print(f"speed-up {stepped / per_incident:.0f}x; whole grid at this size: {stepped * whole:.0f} s stepped, "
          f"{per_incident * whole:.1f} s per incident")
    return 0


if __name__ == "__main__":
    sys.exit(main())
