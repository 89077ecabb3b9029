"""Shared facts for the static deploy checks: where the repo is, which VRAE_ variables are real."""

from pathlib import Path

import pytest
from pydantic import BaseModel

from worker.config import Settings

REPO = Path(__file__).resolve().parents[2]


def settings_env_names(settings: type[BaseModel] = Settings) -> frozenset[str]:
    """Every variable the worker reads: VRAE_<GROUP>__<FIELD>, walking nested models to the leaves."""
    prefix = settings.model_config.get("env_prefix", "")
    delimiter = settings.model_config.get("env_nested_delimiter") or "__"

    def walk(model: type[BaseModel], path: str) -> list[str]:
        names = []
        for name, field in model.model_fields.items():
            full = f"{path}{delimiter}{name}" if path else name
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                names.extend(walk(annotation, full))
            else:
                names.append(full)
        return names

    return frozenset(f"{prefix}{name}".upper() for name in walk(settings, ""))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def worker_env_names() -> frozenset[str]:
    return settings_env_names()

