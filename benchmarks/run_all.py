"""Every worker performance figure in one run, side by side: `make bench ARGS="..."`.

Order: throughput (worker vs raw consumer vs naive worker, Redis bytes per series, worker peak RSS)
per window; then latency at half of each window's measured maximum rate; then scoring speed
(TorchScript vs eager); then the CPU cost of each stage of the hot path (stages.py). One redis-server and one Tansu broker serve the whole run. The machine is
shared and noisy, so quote ratios and CPU microseconds per event, with the wall-clock rates beside
them. The last lines are `name=value`, one per figure.

    python benchmarks/run_all.py                      # default: 200000 events, 1000 series, windows 24,64
    python benchmarks/run_all.py --smoke              # about a minute
    python benchmarks/run_all.py --events 1000000 --series 5000 --windows 64
"""

import os
import platform
import sys
import time
from pathlib import Path

import torch

import latency
import options
import scoring
import stages
import throughput
from harness import local_stack, report, workdir_for

# The targets of issue #5 (seed preset, stride 1, one worker process, torch threads 1).
TARGETS = {
    "ratio_vs_raw": (">=", 0.5),
    "speedup_vs_naive": (">=", 20.0),
    "latency_p99_ms": ("<=", 200.0),
    "redis_bytes_per_series": ("<=", 600.0),
}
REDIS_TARGET_WINDOW = 64


def machine() -> dict[str, str | float | int]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine_cpu": cpu.replace(" ", "_"), "machine_cores": os.cpu_count() or 0,
            "machine_load_1m_start": os.getloadavg()[0], "python": platform.python_version(),
            "torch": torch.__version__}


def target_checks(figures: dict[str, float], windows: tuple[int, ...]) -> dict[str, str]:
    """`target_<figure>_w<window>=met|missed (value vs target)` for each figure that has a target."""
    checks = {}
    for name, (op, bound) in TARGETS.items():
        for window in windows:
            if name == "redis_bytes_per_series" and window != REDIS_TARGET_WINDOW:
                continue
            value = figures.get(f"{name}_w{window}")
            if value is None:
                continue
            met = value >= bound if op == ">=" else value <= bound
            checks[f"target_{name}_w{window}"] = f"{'met' if met else 'missed'}({value:.4g}{op}{bound:g})"
    return checks


def main() -> None:
    opts = options.parse(__doc__.splitlines()[0])
    figures: dict[str, float | int | str] = dict(machine())
    started = time.perf_counter()
    torch.set_num_threads(1)
    with workdir_for(opts.workdir) as workdir:
        with local_stack(workdir) as stack:
            measured = throughput.run(stack, opts, workdir)
            _report("throughput", measured)
            rates = {w: opts.latency_rate or 0.5 * measured[f"worker_events_per_s_w{w}"] for w in opts.windows}
            measured.update(_report("latency", latency.run(stack, opts, rates, workdir)))
        measured.update(_report("scoring", scoring.run(opts, workdir)))
        measured.update(_report("stages", stages.run(opts, workdir)))
    figures.update(measured)
    figures.update(target_checks(measured, opts.windows))
    figures["machine_load_1m_end"] = os.getloadavg()[0]
    figures["bench_seconds"] = time.perf_counter() - started
    report(figures, opts.json_out)


def _report(stage: str, figures: dict[str, float]) -> dict[str, float]:
    """Progress on stderr, so stdout stays the final `name=value` block."""
    print(f"[bench] {stage} done", file=sys.stderr, flush=True)
    return figures


if __name__ == "__main__":
    main()
