import pytest
import torch

from vrae_model.model import VRAE, VRAEConfig, active_units, kl_per_unit, vrae_loss
from vrae_model.presets import PRESETS, get_preset, with_overrides
from vrae_model.exceptions import ConfigError


def test_seed_architecture_has_the_reference_parameter_counts() -> None:
    model = VRAE(PRESETS["seed"].model)
    assert model.param_counts() == {"encoder": 728, "latent": 2048, "decoder": 1639, "total": 4415}


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("window_level", ["keep", "remove"])
def test_every_preset_maps_windows_to_same_shape(name: str, batch: int, window_level: str) -> None:
    config = VRAEConfig.from_dict(
        {**PRESETS[name].model.to_dict(), "n_features": 3, "sequence_length": 10, "window_level": window_level}
    )
    model = VRAE(config).eval()
    x_hat, mu, logvar = model(torch.randn(batch, 10, 3))
    assert x_hat.shape == (batch, 10, 3)
    assert mu.shape == logvar.shape == (batch, config.latent_length)


def test_inference_uses_the_posterior_mean_so_it_is_deterministic() -> None:
    model = VRAE(VRAEConfig(n_features=2, sequence_length=6)).eval()
    x = torch.randn(4, 6, 2)
    assert torch.equal(model(x)[0], model(x)[0])
    mu, _ = model.encode(x)
    assert torch.allclose(model(x)[0], model.decode(mu))


def test_training_mode_samples_z() -> None:
    torch.manual_seed(0)
    model = VRAE(VRAEConfig(n_features=1, sequence_length=6, dropout=0.0)).train()
    x = torch.randn(4, 6, 1)
    assert not torch.equal(model(x)[0], model(x)[0])


def test_latent_fed_decoder_sees_z_at_every_step() -> None:
    config = VRAEConfig(n_features=1, sequence_length=5, hidden_size=4, hidden_layer_depth=1, latent_length=3, decoder_input="latent")
    model = VRAE(config)
    assert model.decoder.lstm.input_size == 3


def test_removed_level_is_added_back_so_an_offset_only_shifts_the_output() -> None:
    torch.manual_seed(0)
    x, offset = torch.randn(3, 6, 2), torch.tensor([5.0, -2.0])
    removing = VRAE(VRAEConfig(n_features=2, sequence_length=6, window_level="remove")).eval()
    assert torch.allclose(removing(x + offset)[0], removing(x)[0] + offset, atol=1e-5)
    shape = removing.split_level(x + offset)[0]
    assert torch.allclose(removing.encode(shape)[0], removing.encode(x - x.mean(1, True))[0], atol=1e-5)
    keeping = VRAE(VRAEConfig(n_features=2, sequence_length=6, window_level="keep")).eval()
    assert not torch.allclose(keeping(x + offset)[0], keeping(x)[0] + offset, atol=1e-3)


def test_auto_window_level_must_be_decided_before_a_model_is_built() -> None:
    config = VRAEConfig(window_level="auto")  # a preset may say "auto"; training decides from the data
    with pytest.raises(ValueError, match="choose_window_level"):
        VRAE(config)


def test_invalid_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="decoder_input"):
        VRAEConfig(decoder_input="teacher")
    with pytest.raises(ValueError, match="window_level"):
        VRAEConfig(window_level="subtract")
    with pytest.raises(ValueError, match="hidden_size"):
        VRAEConfig(hidden_size=0)


def test_loss_is_summed_squared_error_plus_beta_kl() -> None:
    x = torch.zeros(2, 3, 1)
    x_hat = torch.ones(2, 3, 1)
    mu = torch.zeros(2, 4)
    logvar = torch.zeros(2, 4)
    terms = vrae_loss(x, x_hat, mu, logvar, beta=0.5)
    assert terms["recon"].item() == pytest.approx(3.0)
    assert terms["kl"].item() == pytest.approx(0.0)
    mu = torch.ones(2, 4)
    terms = vrae_loss(x, x_hat, mu, logvar, beta=0.5)
    assert terms["kl"].item() == pytest.approx(4 * 0.5)
    assert terms["loss"].item() == pytest.approx(3.0 + 0.5 * 2.0)


def test_free_bits_floor_each_unit_but_report_true_kl() -> None:
    x = torch.zeros(2, 3, 1)
    mu = torch.zeros(2, 4)
    mu[:, 0] = 2.0  # unit 0: KL 2 nats; units 1-3 collapsed at 0
    terms = vrae_loss(x, x, mu, torch.zeros(2, 4), beta=1.0, free_bits=0.5)
    assert terms["kl"].item() == pytest.approx(2.0)
    assert terms["loss"].item() == pytest.approx(2.0 + 3 * 0.5)


def test_kl_per_unit_matches_closed_form() -> None:
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, 1.0]])
    expected = torch.tensor([0.5, -0.5 * (1 + 1 - torch.e)])
    assert torch.allclose(kl_per_unit(mu, logvar), expected)


def test_active_units_counts_latents_that_vary_across_the_batch() -> None:
    mu = torch.zeros(8, 3)
    mu[:, 1] = torch.linspace(-1, 1, 8)
    assert active_units(mu) == 1
    assert active_units(mu[:1]) == 0


def test_overrides_reach_the_config_that_owns_the_field() -> None:
    preset = with_overrides(get_preset("default"), {"hidden_size": 5, "epochs": 3})
    assert preset.model.hidden_size == 5
    assert preset.train.epochs == 3


def test_unknown_preset_or_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="default"):
        get_preset("nope")
    with pytest.raises(ConfigError, match="colour"):
        with_overrides(get_preset("seed"), {"colour": 1})
    with pytest.raises(ConfigError, match="kl_schedule"):
        with_overrides(get_preset("seed"), {"kl_schedule": "sometimes"})
    with pytest.raises(ConfigError, match="scale_floor"):
        with_overrides(get_preset("seed"), {"scale_floor": -0.01})
