"""The worker's settings: one pydantic-settings tree read from `VRAE_*` variables and `.env`.

Nested groups use `__` (VRAE_KAFKA__BOOTSTRAP_SERVERS). Secrets are SecretStr so `vrae-worker config`
and logs never show them; the secrets inside URLs (the Redis URL's password, `?password=`) are masked
when printed.
"""

import json
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vrae_model.windowing import DEFAULT_GAP_FACTOR


class KafkaSettings(BaseModel):
    """Broker connection, topics, security and the consumer/producer knobs that matter."""

    bootstrap_servers: str = "localhost:9092"
    input_topic: str = "sensor-events"
    alert_topic: str = "anomaly-alerts"
    dlq_topic: str = "sensor-events-dlq"
    group_id: str = "vrae-worker"
    client_id: str = "vrae-worker"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    # Production defaults; tests and the demo use 6000/1000/5000 to join a group in ~3 s.
    session_timeout_ms: int = Field(45_000, ge=1000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    max_poll_records: int = Field(2_000, ge=1)
    poll_timeout_ms: int = Field(500, ge=1)
    bootstrap_timeout_ms: int = Field(5_000, ge=100)
    fetch_max_wait_ms: int = Field(100, ge=0)
    producer_linger_ms: int = Field(5, ge=0)
    # kafka-python's max_request_size; dead letters are cut to fit it, since one the producer refused
    # would be retried forever. Raise it only with the brokers' message.max.bytes.
    producer_max_request_bytes: int = Field(1_048_576, ge=16_384)
    delivery_timeout_s: float = Field(30.0, gt=0)

    def security_config(self) -> dict[str, Any]:
        """kafka-python keyword arguments for TLS/SASL, shared by the consumer and the producer."""
        config: dict[str, Any] = {
            "security_protocol": self.security_protocol,
            "ssl_check_hostname": self.ssl_check_hostname,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": _reveal(self.sasl_password),
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_password": _reveal(self.ssl_password),
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        return config


class RedisSettings(BaseModel):
    """Where window state lives. `rediss://` for TLS, `redis://user:pass@host` for ACL users."""

    url: str = "redis://localhost:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    cluster: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: Literal["none", "optional", "required"] = "required"
    key_prefix: str = "vrae"
    socket_timeout_s: float = Field(5.0, gt=0)
    detector_cache_mb: float = Field(128.0, ge=0, description="incidents mode: the detector states this worker "
                                     "wrote, kept in memory so a batch reads back only those another worker "
                                     "changed (about 3.3 KB a series at 1 feature); 0 reads every state back")

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for `from_url` that the URL itself cannot carry (explicit creds, TLS files)."""
        options: dict[str, Any] = {"socket_timeout": self.socket_timeout_s,
                                   "socket_connect_timeout": self.socket_timeout_s}
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password.get_secret_value()
        if self.url.startswith("rediss://"):
            options["ssl_cert_reqs"] = self.ssl_cert_reqs
            tls_files = {"ssl_ca_certs": self.ssl_ca_certs, "ssl_certfile": self.ssl_certfile,
                         "ssl_keyfile": self.ssl_keyfile}
            options.update({key: value for key, value in tls_files.items() if value is not None})
        return options


class ModelSettings(BaseModel):
    """The artifact to serve and how to run it."""

    path: Path = Path("model.pt")
    sha256: str | None = Field(None, description="refuse the model file unless its sha256 matches")
    threshold: float | None = Field(None, ge=0, le=1,
                                    description="alert threshold on anomaly_score; default: the artifact's")
    torch_threads: int = Field(1, ge=1)
    max_batch_size: int = Field(1024, ge=1)
    top_features: int = Field(3, ge=1)
    reload_interval_s: float = Field(5.0, ge=0, description="check the model file for a new version this often "
                                                            "(between batches); 0: never")


class WindowSettings(BaseModel):
    """Which windows are scored, where an outage cuts them, and how much state is kept for how long."""

    stride: int = Field(1, ge=1, description="score every k-th full window of a series")
    gap_factor: float = Field(DEFAULT_GAP_FACTOR, ge=0, description="a step longer than this many of the "
                              "series' usual intervals starts a fresh window (0: windows count events only)")
    ttl_s: int = Field(7 * 24 * 3600, ge=1, description="a series silent this long is forgotten")
    max_series: int = Field(1_000_000, ge=0, description="the most series the state store tracks; events of "
                            "further new series are dead-lettered (series_limit); 0: no limit")


class DetectionSettings(BaseModel):
    """How scored windows become alerts (docs/detection.md; worker/detection/calibration.py)."""

    mode: Literal["windows", "incidents"] = Field(
        "incidents", description="incidents: per-series online calibration and opened/closed incident records; "
                                 "windows: one alert per window over the model's threshold")
    open_surprise: float = Field(3.0, gt=0, description="-log10 tail probability that opens an incident")
    close_surprise: float = Field(2.0, ge=0, description="below this a window counts as normal again")
    close_after: int = Field(5, ge=1, description="normal windows in a row that close an incident")
    memory_windows: float = Field(2000.0, gt=1, description="half-life, in windows, of a series' memory of normal")
    settle_hours: float = Field(24.0, gt=0, description="an incident open this long (series time) closes as "
                                                        "'settled': the series learns its new normal")
    skip_daily_recurrences: bool = Field(True, description="a window that reaches open_surprise within about an "
                                                           "hour and a half of a day after one did (about 3 hours if "
                                                           "no more surprising) opens no incident: a daily "
                                                           "pattern, which the series then learns")
    scores_topic: str | None = Field(None, description="also publish every judged window's scores here")

    @model_validator(mode="after")
    def _hysteresis(self) -> "DetectionSettings":
        if self.close_surprise > self.open_surprise:
            raise ValueError("close_surprise must not exceed open_surprise")
        return self


class EventSettings(BaseModel):
    """Limits that turn hostile or broken input into dead letters instead of memory or CPU."""

    max_bytes: int = Field(65_536, ge=64)
    max_series_id_length: int = Field(256, ge=1)


class ServiceSettings(BaseModel):
    """Process-level behaviour: metrics, health, logs, shutdown and back-off."""

    metrics_port: int = Field(9108, ge=0, le=65535, description="0 disables the metrics endpoint")
    metrics_host: str = "0.0.0.0"
    heartbeat_file: Path = Path("/tmp/vrae-worker.heartbeat")
    heartbeat_stale_s: float = Field(60.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_timeout_s: float = Field(20.0, gt=0)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    overlap_batches: bool = Field(True, description="window, score and deliver one batch on a second thread "
                                                    "while the next is polled and parsed")


class Settings(BaseSettings):
    """Everything the worker reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="VRAE_", env_nested_delimiter="__", env_file=".env",
                                      extra="ignore")

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    model: ModelSettings = ModelSettings()
    window: WindowSettings = WindowSettings()
    detection: DetectionSettings = DetectionSettings()
    events: EventSettings = EventSettings()
    service: ServiceSettings = ServiceSettings()

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain JSON data: SecretStr fields shown as '**********', and the
        secrets of every URL-like value (the Redis URL, any other `scheme://...`) as '****'."""
        return _mask_urls(json.loads(self.model_dump_json()))


def describe_invalid_setting(error: ValidationError) -> str:
    """The first problem of a settings error named as the variable the user sets (`VRAE_X__Y`)."""
    first = error.errors()[0]
    variable = "VRAE_" + "__".join(str(part).upper() for part in first["loc"])
    return f"invalid setting {variable}: {first['msg']}"


def mask_url_password(url: str) -> str:
    """`url` with every secret it can carry replaced by `****`, so it can be printed and logged.

    Secrets are the password of `user:password@`, a lone userinfo (`redis://token@host`: some services
    hand out tokens that way), query parameters whose name says secret (redis-py takes `?password=`,
    `?ssl_password=`, ... from the query) and a fragment (only an unescaped `#` in a password makes one).
    Userinfo ends at the last `@`, since an unescaped `/`, `?` or `#` in a password would spill it into
    the path: where the URL is ambiguous, more is masked, never less."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    userinfo, at, location = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:{_MASK}@" if colon else f"{_MASK}@"
    location, hash_mark, _ = location.partition("#")
    address, question_mark, query = location.partition("?")
    query = "&".join(_mask_parameter(parameter) for parameter in query.split("&")) if query else ""
    return f"{scheme}://{userinfo}{address}{question_mark}{query}{hash_mark and '#' + _MASK}"


def _mask_parameter(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    return f"{name}={_MASK}" if equals and _SECRET_NAME.search(unquote(name)) else parameter


_MASK = "****"
_SECRET_NAME = re.compile(r"pass|secret|token|auth|credential", re.IGNORECASE)


def _mask_urls(data: Any) -> Any:
    """Every URL-like string (`scheme://...`) in nested settings data, masked."""
    if isinstance(data, dict):
        return {key: _mask_urls(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_mask_urls(value) for value in data]
    if isinstance(data, str) and "://" in data:
        return mask_url_password(data)
    return data


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
