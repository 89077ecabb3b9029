"""The committed test artifact (tests/fixtures/tiny-model.pt) is what its recipe makes, in the current format."""

from pathlib import Path

import pytest
from fixtures import make_tiny_model

from vrae_model.artifact import ARTIFACT_FORMAT_VERSION, load_artifact


def recipe_part(metadata: dict) -> dict:
    """What the recipe decides, as the artifact records it (not the weights or the creation time)."""
    model, training = metadata["model_config"], metadata["training_config"]
    return {"window": metadata["window"], "features": tuple(metadata["features"]), "stride": metadata["stride"],
            "format_version": metadata["format_version"],
            "overrides": {key: model.get(key, training.get(key)) for key in make_tiny_model.OVERRIDES}}


def test_committed_artifact_is_in_the_current_format_and_follows_its_recipe() -> None:
    metadata = load_artifact(make_tiny_model.ARTIFACT).metadata
    assert recipe_part(metadata) == {"window": make_tiny_model.WINDOW, "features": make_tiny_model.FEATURES,
                                     "stride": make_tiny_model.STRIDE, "format_version": ARTIFACT_FORMAT_VERSION,
                                     "overrides": make_tiny_model.OVERRIDES}


@pytest.mark.slow
def test_the_recipe_still_trains_an_artifact_like_the_committed_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(make_tiny_model, "ARTIFACT", tmp_path / "tiny-model.pt")
    assert make_tiny_model.main() == 0
    assert recipe_part(load_artifact(tmp_path / "tiny-model.pt").metadata) == \
        recipe_part(load_artifact(Path(make_tiny_model.__file__).parent / "tiny-model.pt").metadata)
