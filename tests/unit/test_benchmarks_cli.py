"""The benchmark scripts import, parse their arguments and judge targets; they are never timed here."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench_modules() -> Iterator[dict[str, object]]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import options
        import run_all

        yield {"options": options, "run_all": run_all}
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_defaults_are_the_issue_sizes(bench_modules: dict) -> None:
    opts = bench_modules["options"].parse("bench", [])
    assert (opts.events, opts.series, opts.windows, opts.preset) == (200_000, 1_000, (24, 64), "seed")


def test_smoke_shrinks_the_run_and_windows_parse(bench_modules: dict) -> None:
    opts = bench_modules["options"].parse("bench", ["--smoke", "--windows", "32", "--latency-threshold", "0"])
    assert opts.events < 200_000 and opts.series < 1_000
    assert opts.windows == (32,)
    assert opts.latency_threshold == 0.0


def test_a_window_shorter_than_two_is_one_line_and_exit_code_2(bench_modules: dict,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench_modules["options"].parse("bench", ["--windows", "1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "benchmarks: --windows needs window lengths >= 2, e.g. --windows 24,64"


def test_lead_windows_default_to_none_and_refuse_a_negative_count(bench_modules: dict,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_modules["options"].parse("bench", []).lead_windows == 0
    assert bench_modules["options"].parse("bench", ["--lead-windows", "600"]).lead_windows == 600
    with pytest.raises(SystemExit) as exit_info:
        bench_modules["options"].parse("bench", ["--lead-windows", "-1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "benchmarks: --lead-windows must be >= 0"


def test_target_checks_report_met_and_missed_with_the_value(bench_modules: dict) -> None:
    figures = {"ratio_vs_raw_w24": 0.62, "speedup_vs_naive_w24": 12.0, "latency_p99_ms_w24": 150.0,
               "redis_bytes_per_series_w24": 300.0, "redis_bytes_per_series_w64": 640.0}
    checks = bench_modules["run_all"].target_checks(figures, (24, 64))
    assert checks["target_ratio_vs_raw_w24"].startswith("met")
    assert checks["target_speedup_vs_naive_w24"] == "missed(12>=20)"
    assert checks["target_latency_p99_ms_w24"].startswith("met")
    assert checks["target_redis_bytes_per_series_w64"] == "missed(640<=600)"
    assert "target_redis_bytes_per_series_w24" not in checks  # the memory target is stated for window 64


def test_run_all_help_runs_as_a_script() -> None:
    result = subprocess.run([sys.executable, str(BENCHMARKS / "run_all.py"), "--help"], capture_output=True, check=False,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert "--events" in result.stdout and "--smoke" in result.stdout


@pytest.mark.parametrize("script, flags", [
    ("quality.py", ("--datasets", "--series", "--seed")),
    ("stream_types.py", ("--seeds", "--series", "--details")),
    ("skab.py", ("--cache", "--jobs")),
    ("stream_outputs.py", ("--seeds", "--skab")),
])
def test_quality_scripts_help_runs_as_a_script(script: str, flags: tuple[str, ...]) -> None:
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert all(flag in result.stdout for flag in flags)


def test_the_quality_headline_is_the_stream_types_and_skab(bench_modules: dict) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import quality
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert quality.DEFAULT_SETS == "streams,skab"
