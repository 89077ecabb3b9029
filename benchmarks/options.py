"""The knobs every benchmark script shares, and the `--smoke` preset that makes a run take a minute."""

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

SMOKE = {"events": 20_000, "series": 200, "naive_events": 500, "latency_s": 5.0, "scoring_min_s": 0.1}


@dataclass(frozen=True)
class BenchOptions:
    events: int  # timed events per throughput run (after the warm-up that fills every window)
    series: int
    windows: tuple[int, ...]
    features: int
    preset: str  # the model the worker serves
    naive_events: int  # the naive worker is timed on this prefix and its rate extrapolated
    latency_s: float  # how long the steady-rate latency run offers events
    latency_rate: float | None  # events/s offered in the latency run; default: half the measured maximum
    latency_threshold: float  # alert threshold override in the latency run (0: every window alerts)
    scoring_min_s: float  # minimum timed span per scoring measurement
    workdir: Path | None
    json_out: Path | None
    profile: bool  # run the worker under pyinstrument; its call tree lands in the workdir
    worker_env: dict[str, str]  # extra VRAE_* settings for every benchmarked worker (tuning experiments)
    baseline: str | None = None  # a git revision whose worker is timed beside this one (throughput)
    lead_windows: int = 0  # windows per series drained before the throughput timer starts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=200_000, help="timed events per throughput run (200000)")
    parser.add_argument("--series", type=int, default=1_000, help="distinct series in the stream (1000)")
    parser.add_argument("--windows", default="24,64", help="window lengths to run, comma separated (24,64)")
    parser.add_argument("--features", type=int, default=1, help="features per event (1)")
    parser.add_argument("--preset", default="seed", help="model preset the worker serves (seed)")
    parser.add_argument("--naive-events", type=int, default=5_000, help="events the naive worker is timed on (5000)")
    parser.add_argument("--latency-seconds", type=float, default=30.0, help="length of the steady-rate run (30)")
    parser.add_argument("--latency-rate", type=float, default=None,
                        help="offered events/s in the latency run (default: half the measured maximum)")
    parser.add_argument("--latency-threshold", type=float, default=0.99,
                        help="anomaly_score threshold in the latency run: 0.99 samples ~1%% of windows, "
                             "0 makes every window alert (0.99)")
    parser.add_argument("--scoring-min-seconds", type=float, default=0.5,
                        help="minimum timed span per scoring measurement (0.5)")
    parser.add_argument("--smoke", action="store_true",
                        help="a one-minute run: 20000 events, 200 series, 500 naive events, 5 s latency")
    parser.add_argument("--workdir", type=Path, default=None, help="keep artifacts and service logs here")
    parser.add_argument("--json", type=Path, default=None, dest="json_out", help="also write the figures as JSON")
    parser.add_argument("--worker-env", action="append", default=[], metavar="VRAE_NAME=VALUE",
                        help="a worker setting for every benchmarked worker, e.g. VRAE_KAFKA__MAX_POLL_RECORDS=10000 "
                             "(repeatable)")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="also time the worker of this git revision, in both modes, on the same records, "
                             "and report this one's rate as a ratio of it (e.g. --baseline HEAD~3)")
    parser.add_argument("--lead-windows", type=int, default=0, metavar="N",
                        help="throughput: windows per series every worker drains before the timer starts, e.g. 600: "
                             "incidents mode is then past each series' learning period, as a long-running worker "
                             "is (0: timed from the first full window, within the learning period)")
    parser.add_argument("--profile", action="store_true",
                        help="profile the worker with pyinstrument (`pip install pyinstrument`); slows it down")


def from_args(args: argparse.Namespace) -> BenchOptions:
    smoke = SMOKE if args.smoke else {}
    windows = tuple(int(part) for part in str(args.windows).split(",") if part.strip())
    if not windows or min(windows) < 2:
        raise ValueError("--windows needs window lengths >= 2, e.g. --windows 24,64")
    worker_env = dict(item.split("=", 1) for item in args.worker_env if "=" in item)
    if len(worker_env) != len(args.worker_env) or any(not key.startswith("VRAE_") for key in worker_env):
        raise ValueError("--worker-env takes VRAE_NAME=VALUE, e.g. VRAE_KAFKA__FETCH_MAX_WAIT_MS=10")
    if args.lead_windows < 0:
        raise ValueError("--lead-windows must be >= 0")
    if args.profile and importlib.util.find_spec("pyinstrument") is None:
        raise ValueError("--profile needs pyinstrument: `.venv/bin/pip install pyinstrument`")
    return BenchOptions(
        events=smoke.get("events", args.events),
        series=smoke.get("series", args.series),
        windows=windows,
        features=args.features,
        preset=args.preset,
        naive_events=smoke.get("naive_events", args.naive_events),
        latency_s=smoke.get("latency_s", args.latency_seconds),
        latency_rate=args.latency_rate,
        latency_threshold=args.latency_threshold,
        scoring_min_s=smoke.get("scoring_min_s", args.scoring_min_seconds),
        workdir=args.workdir,
        json_out=args.json_out,
        profile=args.profile,
        worker_env=worker_env,
        baseline=args.baseline,
        lead_windows=args.lead_windows,
    )


def parse(description: str, argv: list[str] | None = None) -> BenchOptions:
    """Options from the command line; a bad combination is one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser)
    try:
        return from_args(parser.parse_args(argv))
    except ValueError as error:
        print(f"benchmarks: {error}", file=sys.stderr)
        raise SystemExit(2) from None
