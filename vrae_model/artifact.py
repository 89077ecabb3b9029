"""The artifact file format: one TorchScript file with `metadata.json` in its extra files.

This is the only module that knows the format. Loading needs torch alone, so the worker never pulls
in Lightning or the training code.
"""

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vrae_model.exceptions import ArtifactError

# 2: the forward pass returns each feature's share of the error as `feature_shares` (1: `feature_scores`)
# and the `surprise` beside `anomaly_score`; metadata records `interval_ms`. Readers accept both
# (`forward_outputs`).
ARTIFACT_FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = frozenset({1, 2})
METADATA_FILE = "metadata.json"
REQUIRED_KEYS = (
    "format_version",
    "model_name",
    "model_version",
    "window",
    "stride",
    "features",
    "scaler",
    "threshold",
    "score_threshold",
    "threshold_method",
    "calibration",
    "model_config",
    "training_config",
    "param_counts",
    "data_fingerprint",
    "library_version",
    "torch_version",
    "created_at",
)


@dataclass(frozen=True)
class Artifact:
    module: torch.jit.ScriptModule  # the scripted ScoringModule, eval mode
    metadata: dict[str, Any]  # parsed metadata.json
    sha256: str  # hex digest of the file bytes
    path: Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _missing_keys(metadata: dict[str, Any]) -> list[str]:
    return [key for key in REQUIRED_KEYS if key not in metadata]


@contextmanager
def _torchscript_deprecation_hidden() -> Iterator[None]:
    """TorchScript announces its deprecation on every script/save/load; it is still the torch-only
    format the worker needs. Only that announcement is hidden, and only around our own calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


def save_artifact(module: nn.Module, metadata: dict[str, Any], path: str | Path) -> str:
    """Script `module`, write it with its metadata atomically, return the file's sha256."""
    path = Path(path)
    missing = _missing_keys(metadata)
    if missing:
        raise ArtifactError(f"metadata lacks required key(s) {', '.join(missing)}")
    module.eval()
    with _torchscript_deprecation_hidden():
        scripted = torch.jit.script(module)
    payload = json.dumps(metadata, sort_keys=True, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a reader never sees half a file.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    os.chmod(temporary, 0o644)  # mkstemp makes it private; the worker may run as another user
    try:
        with _torchscript_deprecation_hidden():
            torch.jit.save(scripted, temporary, _extra_files={METADATA_FILE: payload})
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return file_sha256(path)


def load_artifact(path: str | Path, expected_sha256: str | None = None) -> Artifact:
    """Load and verify an artifact; every failure is an ArtifactError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such artifact; check the model path")
    sha256 = file_sha256(path)
    if expected_sha256 is not None and sha256 != expected_sha256.strip().lower():
        raise ArtifactError(f"{path}: sha256 {sha256} does not match the expected {expected_sha256}")
    extra_files = {METADATA_FILE: ""}
    try:
        with _torchscript_deprecation_hidden():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)
    except (RuntimeError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: not a TorchScript artifact ({first_line})") from None
    raw = extra_files[METADATA_FILE]
    if not raw:
        raise ArtifactError(f"{path}: no {METADATA_FILE} inside; re-export the model with `vrae export`")
    try:
        metadata = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: {METADATA_FILE} does not parse ({exc})") from None
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{path}: {METADATA_FILE} is not a JSON object")
    version = metadata.get("format_version")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ArtifactError(
            f"{path}: format_version {version!r} is not supported (supported: {sorted(SUPPORTED_FORMAT_VERSIONS)}); "
            "upgrade vrae-stream or re-export the model"
        )
    missing = _missing_keys(metadata)
    if missing:
        raise ArtifactError(f"{path}: metadata lacks required key(s) {', '.join(missing)}; re-export the model")
    module.eval()
    return Artifact(module=module, metadata=metadata, sha256=sha256, path=path)


OUTPUT_ALIASES = {"feature_scores": "feature_shares"}


def forward_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """A forward pass's outputs under the current names, whichever format version produced them (a
    format 1 module has no `surprise`: it is derived from `anomaly_score`, floored where float32 stops)."""
    named = {OUTPUT_ALIASES.get(key, key): value for key, value in outputs.items()}
    if "surprise" not in named:
        anomaly = named["anomaly_score"].double()
        named["surprise"] = (-torch.log10((1.0 - anomaly).clamp_min(2.0**-24))).float()
    return named
