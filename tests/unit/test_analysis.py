import sys

import numpy as np
import pytest

from vrae_model.analysis import cluster, pick_examples, plot_map, plot_timeline, reduce, sample_latents
from vrae_model.exceptions import DataError, VraeError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _two_blobs(n: int = 40, dims: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-5, 0.3, (n, dims)), rng.normal(5, 0.3, (n, dims))]).astype(np.float32)


def test_pick_examples_takes_the_worst_then_typical_windows_without_repeats() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.45, 0.55, 0.2, 0.95, 0.4])
    chosen = pick_examples(scores, 4)
    assert chosen[:2].tolist() == [6, 1]
    assert set(chosen[2:]) <= {2, 3, 4, 7}
    assert len(set(chosen.tolist())) == 4


def test_pick_examples_never_asks_for_more_windows_than_exist() -> None:
    assert sorted(pick_examples(np.array([0.3, 0.1]), 6).tolist()) == [0, 1]


def test_cluster_separates_well_separated_groups() -> None:
    labels = cluster(_two_blobs(), 2, seed=0)
    assert len(set(labels[:40])) == 1 and len(set(labels[40:])) == 1 and labels[0] != labels[-1]


@pytest.mark.parametrize("k", [0, 81])
def test_cluster_rejects_impossible_k(k: int) -> None:
    with pytest.raises(DataError, match="--k"):
        cluster(_two_blobs(), k)


def test_pca_map_keeps_the_main_separation_on_the_first_axis() -> None:
    coords = reduce(_two_blobs(), "pca")
    assert coords.shape == (80, 2)
    assert np.sign(coords[:40, 0]).tolist() == [np.sign(coords[0, 0])] * 40
    assert np.sign(coords[40:, 0]).tolist() == [-np.sign(coords[0, 0])] * 40


def test_tsne_map_has_one_point_per_window() -> None:
    assert reduce(_two_blobs(n=10), "tsne", seed=1).shape == (20, 2)


def test_one_dimensional_latents_still_give_a_map() -> None:
    coords = reduce(np.arange(5, dtype=np.float32)[:, None], "pca")
    np.testing.assert_array_equal(coords[:, 1], 0.0)


@pytest.mark.parametrize("method, latents", [("umap", _two_blobs()), ("tsne", _two_blobs(n=2)), ("pca", _two_blobs()[:1])])
def test_reduce_rejects_bad_method_or_too_few_windows(method: str, latents: np.ndarray) -> None:
    with pytest.raises(DataError):
        reduce(latents, method)


def test_prior_samples_are_standard_normal_and_seeded() -> None:
    z = sample_latents(4000, 3, "prior", seed=2)
    assert z.shape == (4000, 3) and z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=0.1)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=0.1)
    np.testing.assert_array_equal(z, sample_latents(4000, 3, "prior", seed=2))


def test_posterior_samples_follow_the_data_latents() -> None:
    latents = np.random.default_rng(0).normal([3.0, -2.0], [0.5, 2.0], size=(2000, 2))
    z = sample_latents(4000, 2, "posterior", latents=latents, seed=0)
    np.testing.assert_allclose(z.mean(axis=0), [3.0, -2.0], atol=0.15)
    np.testing.assert_allclose(z.std(axis=0), [0.5, 2.0], rtol=0.1)


def test_posterior_needs_data_latents() -> None:
    with pytest.raises(DataError, match="--data"):
        sample_latents(3, 2, "posterior")


def test_timeline_plot_writes_a_png(tmp_path) -> None:
    x = np.arange(50)
    scores = np.linspace(0, 1, 50)
    labels = (x > 40).astype(np.int8)
    values = np.random.default_rng(0).normal(size=(50, 2))
    path = plot_timeline(
        x, scores, 0.9, tmp_path / "t.png", title="t", x_label="window", values=values,
        feature_names=["a", "b"], labels=labels,
    )  # fmt: skip
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_missing_matplotlib_names_the_extra_to_install(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # what an absent package looks like to import
    with pytest.raises(VraeError, match=r"pip install 'vrae-stream\[analysis\]'"):
        plot_map(np.zeros((3, 2)), tmp_path / "m.png")
