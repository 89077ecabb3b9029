import json
import logging
import signal
import time
from pathlib import Path

import pytest

from worker.__main__ import main
from worker.config import Settings, mask_url_password
from worker.health import Heartbeat


def test_nested_env_variables_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VRAE_KAFKA__GROUP_ID=from-dotenv\nVRAE_WINDOW__STRIDE=2\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VRAE_WINDOW__STRIDE", "4")
    monkeypatch.setenv("VRAE_KAFKA__BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("VRAE_MODEL__SHA256", "ab" * 32)
    settings = Settings()
    assert settings.window.stride == 4  # the environment beats .env
    assert settings.kafka.group_id == "from-dotenv"
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.model.sha256 == "ab" * 32


def test_kafka_security_is_passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VRAE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("VRAE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("VRAE_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("VRAE_KAFKA__SASL_PASSWORD", "hunter2")
    config = Settings(_env_file=None).kafka.security_config()
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_plain_password"] == "hunter2" and config["sasl_mechanism"] == "SCRAM-SHA-512"


def test_redis_tls_and_acl_options() -> None:
    settings = Settings(_env_file=None, redis={"url": "rediss://cache:6380/0", "username": "worker",
                                               "password": "pw", "ssl_ca_certs": "/ca.pem"})
    options = settings.redis.client_options()
    assert options["username"] == "worker" and options["password"] == "pw"
    assert options["ssl_ca_certs"] == "/ca.pem" and options["ssl_cert_reqs"] == "required"


def test_config_command_masks_secrets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VRAE_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("VRAE_REDIS__URL", "redis://worker:s3cret@cache:6379/0")
    assert main(["config"]) == 0
    output = capsys.readouterr().out
    assert "hunter2" not in output and "s3cret" not in output
    printed = json.loads(output)
    assert printed["kafka"]["sasl_password"] == "**********"
    assert printed["redis"]["url"] == "redis://worker:****@cache:6379/0"


def test_invalid_setting_is_one_line_with_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VRAE_WINDOW__STRIDE", "0")
    assert main(["config"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "VRAE_WINDOW__STRIDE" in error


def test_mask_url_password_leaves_passwordless_urls_alone() -> None:
    assert mask_url_password("redis://cache:6379/0") == "redis://cache:6379/0"
    assert mask_url_password("rediss://:pw@cache:6380") == "rediss://:****@cache:6380"


def test_check_fails_without_a_fresh_heartbeat(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "hb"
    monkeypatch.setenv("VRAE_SERVICE__HEARTBEAT_FILE", str(path))
    assert main(["check"]) == 1
    Heartbeat(path).beat()
    assert main(["check"]) == 0
    path.write_text("1.0\n")  # 1970: stale
    assert main(["check"]) == 1


@pytest.mark.parametrize("url, secret, shown", [
    ("redis://cache:6379/0?password=s3cret", "s3cret", "redis://cache:6379/0?password=****"),
    ("rediss://cache:6380/0?db=2&password=s3cret&ssl_password=k3y", "s3cret",
     "rediss://cache:6380/0?db=2&password=****&ssl_password=****"),
    ("rediss://worker:s3cret@cache:6380/1", "s3cret", "rediss://worker:****@cache:6380/1"),
    ("redis://:s3cret@cache:6379", "s3cret", "redis://:****@cache:6379"),
    ("redis://s3cret@cache:6379", "s3cret", "redis://****@cache:6379"),
    ("redis://worker:s3/cr?et@cache:6379/0", "cr?et", "redis://worker:****@cache:6379/0"),
    ("redis://worker:s3cr#et@cache:6379/0", "#et", "redis://worker:****@cache:6379/0"),
    ("unix://:s3cret@/run/redis.sock?db=0", "s3cret", "unix://:****@/run/redis.sock?db=0"),
])
def test_config_masks_every_password_a_redis_url_can_carry(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           url: str, secret: str, shown: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VRAE_REDIS__URL", url)
    assert main(["config"]) == 0
    output = capsys.readouterr().out
    assert secret not in output
    assert json.loads(output)["redis"]["url"] == shown


def test_config_masks_kafka_secrets_and_any_url_like_setting(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VRAE_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("VRAE_KAFKA__SSL_PASSWORD", "keypass")
    monkeypatch.setenv("VRAE_REDIS__PASSWORD", "redispass")
    monkeypatch.setenv("VRAE_KAFKA__BOOTSTRAP_SERVERS", "SASL_SSL://svc:brokerpass@k1:9093")
    assert main(["config"]) == 0
    output = capsys.readouterr().out
    assert not [secret for secret in ("hunter2", "keypass", "redispass", "brokerpass") if secret in output]
    printed = json.loads(output)
    assert printed["kafka"]["ssl_password"] == printed["redis"]["password"] == "**********"
    assert printed["kafka"]["bootstrap_servers"] == "SASL_SSL://svc:****@k1:9093"


@pytest.mark.parametrize("content, fragment", [
    pytest.param(f"{time.time() + 3600:.3f}\n", "in the future", id="an-hour-ahead"),
    ("nan\n", "not a time"),
    ("inf\n", "not a time"),
    ("-inf\n", "not a time"),
    ("garbage\n", "not a time"),
    ("", "not a time"),
])
def test_check_refuses_a_heartbeat_from_the_future_or_not_a_time(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                                  content: str, fragment: str) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "hb"
    monkeypatch.setenv("VRAE_SERVICE__HEARTBEAT_FILE", str(path))
    path.write_text(content)
    assert main(["check"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("unhealthy: ") and fragment in error and error.count("\n") == 1


def test_check_allows_a_heartbeat_slightly_ahead_of_the_clock(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "hb"
    monkeypatch.setenv("VRAE_SERVICE__HEARTBEAT_FILE", str(path))
    path.write_text(f"{time.time() + 2:.3f}\n")  # another clock a little ahead: within the allowance
    assert main(["check"]) == 0


def test_run_refuses_a_missing_model_with_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VRAE_MODEL__PATH", str(tmp_path / "missing.pt"))
    monkeypatch.setenv("VRAE_SERVICE__METRICS_PORT", "0")
    # `run` owns the process: it installs signal handlers and JSON logging; give them back to pytest.
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    root_handlers = logging.getLogger().handlers[:]
    try:
        assert main(["run"]) == 2
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        logging.getLogger().handlers[:] = root_handlers
    error = capsys.readouterr().err
    assert error.startswith("vrae-worker: ") and "missing.pt" in error and error.count("\n") == 1


def test_detection_settings_reach_the_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.app import detector_settings

    monkeypatch.setenv("VRAE_DETECTION__MEMORY_WINDOWS", "500")
    monkeypatch.setenv("VRAE_DETECTION__SETTLE_HOURS", "2")
    monkeypatch.setenv("VRAE_DETECTION__OPEN_SURPRISE", "4")
    monkeypatch.setenv("VRAE_WINDOW__GAP_FACTOR", "8")
    monkeypatch.setenv("VRAE_DETECTION__SKIP_DAILY_RECURRENCES", "false")
    settings = Settings()
    calibration = detector_settings(settings.detection, settings.window.gap_factor).calibration
    assert (calibration.halflife, calibration.settle_ms, calibration.open_surprise, calibration.gap_factor,
            calibration.skip_daily_recurrences) == (500.0, 7_200_000, 4.0, 8.0, False)
    monkeypatch.setenv("VRAE_DETECTION__CLOSE_SURPRISE", "5")
    with pytest.raises(ValueError, match="close_surprise"):
        Settings()
