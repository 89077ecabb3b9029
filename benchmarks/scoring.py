"""Scoring speed: windows/s of the exported TorchScript module against the eager ScoringModule.

Same weights, same inputs, one torch thread (the worker's default), batch sizes 1, 64 and 1024, for
each preset. Eager and scripted are timed in alternating rounds and the best round of each is kept,
so a burst of load from a neighbour on a shared machine hurts both sides alike.

Run alone: `python benchmarks/scoring.py --windows 24`.
"""

import time
from collections.abc import Callable
from pathlib import Path

import torch

import options
from bench_models import build_module, sample_windows, write_artifact
from harness import run_script
from vrae_model.artifact import load_artifact

PRESETS = ("seed", "default")
BATCH_SIZES = (1, 64, 1024)
ROUNDS = 3


def windows_per_s(forward: Callable[[torch.Tensor], object], batch: torch.Tensor, min_s: float) -> float:
    """Best-effort rate of one side: repeat the call until `min_s` has passed."""
    calls = 0
    started = time.perf_counter()
    while True:
        forward(batch)
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_s:
            return calls * batch.shape[0] / elapsed


def compare(eager: torch.nn.Module, scripted: torch.jit.ScriptModule, batch: torch.Tensor,
            min_s: float) -> tuple[float, float]:
    with torch.inference_mode():
        for _ in range(5):  # the profiling executor specialises the scripted graph on its first calls
            eager(batch)
            scripted(batch)
        best_eager = best_scripted = 0.0
        for _ in range(ROUNDS):
            best_eager = max(best_eager, windows_per_s(eager, batch, min_s))
            best_scripted = max(best_scripted, windows_per_s(scripted, batch, min_s))
    return best_eager, best_scripted


def run(opts: options.BenchOptions, workdir: Path) -> dict[str, float]:
    torch.set_num_threads(1)
    window = opts.windows[0]
    figures: dict[str, float] = {}
    for preset in PRESETS:
        path = write_artifact(workdir / f"scoring-{preset}-w{window}.pt", preset, window, opts.features)
        scripted = load_artifact(path).module
        eager = build_module(preset, window, opts.features, sample_windows(2000, window, opts.features)).module
        for batch_size in BATCH_SIZES:
            batch = torch.from_numpy(sample_windows(batch_size, window, opts.features, seed=1))
            eager_rate, scripted_rate = compare(eager, scripted, batch, opts.scoring_min_s)
            name = f"scoring_{preset}_w{window}_b{batch_size}"
            figures[f"{name}_scripted_windows_per_s"] = scripted_rate
            figures[f"{name}_eager_windows_per_s"] = eager_rate
            figures[f"{name}_scripted_vs_eager"] = scripted_rate / eager_rate
    return figures


def main() -> None:
    run_script(__doc__, run)


if __name__ == "__main__":
    main()
