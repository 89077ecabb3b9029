"""The environment that starts a worker process with given settings (tests that run `python -m worker`)."""

import os

from worker.config import Settings


def environment(settings: Settings) -> dict[str, str]:
    """The VRAE_* variables that reproduce `settings` in a child process."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VRAE_")}
    for group, values in settings.model_dump(mode="json").items():
        for name, value in values.items():
            if value is not None and not isinstance(value, dict):
                env[f"VRAE_{group.upper()}__{name.upper()}"] = str(value)
    return env
