"""`vrae-worker run | config | check` (the service) and `backtest | export-history | tune-levels | demo` (the tools in
worker.tools, imported only when called); also `python -m worker`.

Errors at this edge are one line on stderr saying what to fix, exit code 2.
"""

import argparse
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from pydantic import ValidationError

from vrae_model.exceptions import VraeError
from worker import logs
from worker.config import Settings, describe_invalid_setting
from worker.exceptions import UsageError
from worker.health import check_heartbeat
from worker.metrics import Metrics

log = logging.getLogger("worker")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        raise UsageError(describe_invalid_setting(error)) from None


def cmd_config(_: argparse.Namespace) -> int:
    print(json.dumps(load_settings().masked(), indent=2))
    return 0


def cmd_check(_: argparse.Namespace) -> int:
    settings = load_settings()
    healthy, reason = check_heartbeat(settings.service.heartbeat_file, settings.service.heartbeat_stale_s)
    if not healthy:
        print(f"unhealthy: {reason}", file=sys.stderr)
        return 1
    print(f"healthy: {reason}")
    return 0


def cmd_run(_: argparse.Namespace) -> int:
    # Imported here so that `check`, run by a container healthcheck every few seconds, never loads torch.
    from worker.app import build_with_retry

    settings = load_settings()
    logs.configure(settings.service.log_level)
    stop = threading.Event()
    install_signal_handlers(stop, settings.service.shutdown_timeout_s)
    metrics = Metrics()
    try:
        metrics.serve(settings.service.metrics_port, settings.service.metrics_host)
    except OSError as error:
        raise UsageError(f"cannot serve metrics on port {settings.service.metrics_port} ({error.strerror}); "
                         "set VRAE_SERVICE__METRICS_PORT to a free port or 0") from None
    try:
        service = build_with_retry(settings, metrics, stop)
    except VraeError as error:
        raise UsageError(str(error)) from None
    if service is not None:
        # Everything built so far (torch, the model, the clients: ~200k objects) lives as long as the
        # process. Frozen, it leaves the collector's view: a full collection took 100-300 ms with it, a
        # stall every few seconds that went straight into alert latency; now it takes a few ms.
        gc.freeze()
        if not service.run(stop):
            return 1  # nothing is lost (the batch is consumed again), but an operator should know
    return 0


def install_signal_handlers(stop: threading.Event, shutdown_timeout_s: float) -> None:
    """First SIGTERM/SIGINT: finish the batch and exit 0 (1 if it could not be committed). If that takes
    longer than the bound, or a second signal arrives, exit 1 at once (the uncommitted batch is replayed
    by the next worker)."""

    def hard_exit() -> None:
        log.error("shutdown exceeded its time limit; exiting without commit",
                  extra={"timeout_s": shutdown_timeout_s})
        os._exit(1)

    def handle(signum: int, _frame: object) -> None:
        if stop.is_set():
            os._exit(1)
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        stop.set()
        timer = threading.Timer(shutdown_timeout_s, hard_exit)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.tools.demo import run_demo

    return run_demo(args.extra)


def cmd_export_history(args: argparse.Namespace) -> int:
    from worker.tools.history_export import command

    return command(args, load_settings())


def cmd_backtest(args: argparse.Namespace) -> int:
    from worker.tools.backtest_report import command

    return command(args, load_settings())


def cmd_tune_levels(args: argparse.Namespace) -> int:
    from worker.tools.tune_levels import command

    return command(args, load_settings())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vrae-worker", description="Streaming VRAE anomaly detection worker. "
                                     "Configured by VRAE_* environment variables (and .env).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="consume events, score windows, publish alerts").set_defaults(func=cmd_run)
    commands.add_parser("config", help="print the effective configuration (secrets masked)").set_defaults(
        func=cmd_config)
    commands.add_parser("check", help="exit 1 when the heartbeat is stale (container healthcheck)").set_defaults(
        func=cmd_check)
    export = commands.add_parser("export-history", help="dump the last N hours of the input topic to a long CSV "
                                 "for `vrae train` (model refresh)")
    export.add_argument("--hours", type=float, required=True, help="how far back, in hours")
    export.add_argument("--out", required=True, help="CSV file to write")
    export.add_argument("--features", help="feature names in order (default: the configured model's)")
    export.set_defaults(func=cmd_export_history)
    backtest = commands.add_parser("backtest", help="replay a long CSV through the worker's logic (configured "
                                   "settings and model, in memory): per-event output, summary, scorecard with labels")
    backtest.add_argument("--data", required=True, help="long CSV series_id,timestamp,<features>[,label]")
    backtest.add_argument("--out", required=True, help="CSV to write, one row per event")
    backtest.add_argument("--model", help="artifact to replay with (default: VRAE_MODEL__PATH)")
    backtest.add_argument("--plot", help="also draw the series with their incidents and surprise (.png)")
    backtest.set_defaults(func=cmd_backtest)
    tune = commands.add_parser("tune-levels", help="choose the incident open/close levels on a labelled long CSV")
    tune.add_argument("--data", required=True, help="long CSV series_id,timestamp,<features>,label to choose on")
    tune.add_argument("--check", help="a second labelled CSV to report the chosen levels on")
    tune.add_argument("--objective", choices=("f1", "nab"), default="f1",
                      help="f1 (default): misses and false alarms both count; nab: rewards early detection")
    tune.add_argument("--model", help="artifact to replay with (default: VRAE_MODEL__PATH)")
    tune.set_defaults(func=cmd_tune_levels)
    # The demo parses its own flags (`vrae-worker demo --help`).
    commands.add_parser("demo", help="run the whole pipeline locally", add_help=False).set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        return args.func(args)
    except UsageError as error:
        print(f"vrae-worker: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
