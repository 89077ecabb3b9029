"""The Variational Recurrent Auto-Encoder (Fabius & van Amersfoort, 2014) and its loss.

Shapes: B batch, T time steps (sequence_length), F features, H hidden_size, L latent_length.
Every module here is TorchScript-able because the exported ScoringModule wraps them.
"""

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

DECODER_INPUTS = ("zeros", "latent")
WINDOW_LEVELS = ("keep", "remove", "auto")


@dataclass
class VRAEConfig:
    """Architecture of one VRAE; `n_features` and `sequence_length` come from the data."""

    n_features: int = 1
    sequence_length: int = 24
    hidden_size: int = 7
    hidden_layer_depth: int = 2
    latent_length: int = 128
    dropout: float = 0.2
    # "zeros": the seed decoder, driven only by its initial state (z is seen once, at t=0).
    # "latent": z is also fed at every step, which keeps the decoder from ignoring it.
    decoder_input: str = "zeros"
    # "keep": the model reconstructs each window as it is, level included (the reference model).
    # "remove": each window's own mean per feature is taken out before encoding and added back after
    # decoding, so the model learns shapes only. A recurrent model cannot extrapolate to levels it never
    # saw: after a sensor's level drifts, every window of it reconstructs badly and hides real faults.
    # "auto": decided from the training windows when training starts (`choose_window_level`): removed when
    # the typical feature's variance lies mostly in its window levels, kept otherwise.
    window_level: str = "keep"

    def __post_init__(self) -> None:
        for name in ("n_features", "sequence_length", "hidden_size", "hidden_layer_depth", "latent_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.decoder_input not in DECODER_INPUTS:
            raise ValueError(f"decoder_input must be one of {DECODER_INPUTS}, got {self.decoder_input!r}")
        if self.window_level not in WINDOW_LEVELS:
            raise ValueError(f"window_level must be one of {WINDOW_LEVELS}, got {self.window_level!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VRAEConfig":
        """Ignore unknown keys so artifacts written by a newer library still load."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _lstm(input_size: int, config: VRAEConfig) -> nn.LSTM:
    # LSTM dropout only acts between layers; passing it to a one-layer LSTM just triggers a warning.
    dropout = config.dropout if config.hidden_layer_depth > 1 else 0.0
    return nn.LSTM(input_size, config.hidden_size, config.hidden_layer_depth, batch_first=True, dropout=dropout)


class Encoder(nn.Module):
    """Summarises a window as the last layer's final hidden state."""

    def __init__(self, config: VRAEConfig) -> None:
        super().__init__()
        self.lstm = _lstm(config.n_features, config)

    def forward(self, x: Tensor) -> Tensor:
        _, (h_n, _) = self.lstm(x)  # h_n: (depth, B, H)
        return h_n[-1]  # (B, H)


class LatentHeads(nn.Module):
    """Maps the encoder summary to the posterior mean and log-variance."""

    def __init__(self, config: VRAEConfig) -> None:
        super().__init__()
        self.hidden_to_mean = nn.Linear(config.hidden_size, config.latent_length)
        self.hidden_to_logvar = nn.Linear(config.hidden_size, config.latent_length)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return self.hidden_to_mean(h), self.hidden_to_logvar(h)  # (B, L) each


class Decoder(nn.Module):
    """Unrolls T steps from an initial state computed from z, emitting F values per step."""

    def __init__(self, config: VRAEConfig) -> None:
        super().__init__()
        self.sequence_length = config.sequence_length
        self.depth = config.hidden_layer_depth
        self.hidden_size = config.hidden_size
        self.feed_latent = config.decoder_input == "latent"
        self.latent_to_hidden = nn.Linear(config.latent_length, config.hidden_size)
        self.lstm = _lstm(config.latent_length if self.feed_latent else 1, config)
        self.hidden_to_output = nn.Linear(config.hidden_size, config.n_features)

    def forward(self, z: Tensor) -> Tensor:
        batch = z.shape[0]
        h_0 = self.latent_to_hidden(z).unsqueeze(0).repeat(self.depth, 1, 1)  # (B, L) -> (depth, B, H)
        c_0 = torch.zeros_like(h_0)
        if self.feed_latent:
            inputs = z.unsqueeze(1).expand(batch, self.sequence_length, z.shape[1])  # (B, T, L)
        else:
            inputs = torch.zeros(batch, self.sequence_length, 1, dtype=z.dtype, device=z.device)  # (B, T, 1)
        out, _ = self.lstm(inputs, (h_0, c_0))  # (B, T, H)
        return self.hidden_to_output(out)  # (B, T, F)


class VRAE(nn.Module):
    """Encoder -> latent heads -> decoder. Samples z while training, uses the mean otherwise."""

    def __init__(self, config: VRAEConfig) -> None:
        super().__init__()
        if config.window_level == "auto":
            raise ValueError('window_level "auto" is decided from data: '
                             "resolve it with vrae_model.data.choose_window_level first")
        self.config = config
        self.remove_level = config.window_level == "remove"
        self.encoder = Encoder(config)
        self.latent = LatentHeads(config)
        self.decoder = Decoder(config)

    def split_level(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(shape, level) with x = shape + level: what the encoder sees and what the decoder's output
        is shifted by. The level is each window's mean per feature, or zero when it is kept."""
        if self.remove_level:
            level = x.mean(dim=1, keepdim=True)  # (B, 1, F)
            return x - level, level
        return x, torch.zeros_like(x[:, :1])

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior of a window's SHAPE (the first part of `split_level`): (B, T, F) -> (B, L), (B, L)."""
        return self.latent(self.encoder(x))

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)  # (B, L) -> (B, T, F)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        shape, level = self.split_level(x)
        mu, logvar = self.encode(shape)
        if self.training:
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            z = mu
        return self.decode(z) + level, mu, logvar

    @torch.jit.unused
    def param_counts(self) -> dict[str, int]:
        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        counts = {"encoder": count(self.encoder), "latent": count(self.latent), "decoder": count(self.decoder)}
        counts["total"] = sum(counts.values())
        return counts


def kl_per_unit(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) of each latent unit, averaged over the batch: (B, L) -> (L,)."""
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())).mean(dim=0)


def vrae_loss(
    x: Tensor, x_hat: Tensor, mu: Tensor, logvar: Tensor, *, beta: float = 1.0, free_bits: float = 0.0
) -> dict[str, Tensor]:
    """Negative ELBO per window: summed squared error + beta * KL.

    Free bits (Kingma et al. 2016) floor each unit's batch-mean KL at `free_bits` nats, so the
    optimiser gains nothing by pushing a unit to the prior: the usual cure for posterior collapse in
    LSTM decoders. `kl` is the true KL (for logging); `loss` uses the floored one.
    """
    recon = (x_hat - x).pow(2).sum(dim=(1, 2)).mean()
    kl_units = kl_per_unit(mu, logvar)
    kl_floored = torch.clamp(kl_units, min=free_bits).sum() if free_bits > 0 else kl_units.sum()
    return {
        "loss": recon + beta * kl_floored,
        "recon": recon,
        "mse": (x_hat - x).pow(2).mean(),
        "kl": kl_units.sum(),
    }


def active_units(mu: Tensor, threshold: float = 1e-2) -> int:
    """Latent units whose posterior mean varies across the batch (Burda et al. 2016): (B, L) -> count."""
    if mu.shape[0] < 2:
        return 0
    return int((mu.var(dim=0) > threshold).sum().item())
