"""Fit a VRAE with Lightning, calibrate it on held-out windows, and write the artifact.

The only module of the package that imports Lightning. The checkpoint written beside the artifact
carries everything the artifact does (scaler, calibration, threshold, configs, fingerprint), so
`export_from_checkpoint` can rebuild an identically scoring artifact from it alone.
"""

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from vrae_model.artifact import save_artifact
from vrae_model.calibration import Calibration
from vrae_model.data import Scaler, WindowSet, choose_window_level, fingerprint, level_share, level_wander
from vrae_model.exceptions import ArtifactError, ConfigError, DataError
from vrae_model.model import VRAE, VRAEConfig, active_units, vrae_loss
from vrae_model.presets import Preset, TrainConfig, get_preset, with_overrides
from vrae_model.scoring import ScoringModule, artifact_metadata, calibrate

__all__ = ["TrainConfig", "TrainResult", "train", "export_from_checkpoint", "kl_weight", "split_indices"]

EXPORT_KEY = "vrae_export"
MIN_WINDOWS = 4


@dataclass
class TrainResult:
    artifact_path: Path
    checkpoint_path: Path
    metrics: dict[str, Any]
    metadata: dict[str, Any]


def kl_weight(epoch: int, schedule: str, warmup_epochs: int) -> float:
    """Multiplier on beta at `epoch` (0-based).

    linear: 0 -> 1 over the warm-up, then 1 (Bowman et al. 2016). cyclical: that ramp over the first
    half of every `warmup_epochs`-long cycle, then 1 for the second half (Fu et al. 2019), so the
    decoder repeatedly learns to use z before the KL pressure returns.
    """
    if schedule == "none" or warmup_epochs <= 0:
        return 1.0
    if schedule == "linear":
        return min(1.0, epoch / warmup_epochs)
    if schedule == "cyclical":
        ramp = max(warmup_epochs / 2.0, 1.0)
        return min(1.0, (epoch % warmup_epochs) / ramp)
    raise ValueError(f"unknown kl_schedule {schedule!r}")


def split_indices(n: int, val_fraction: float, seed: int, block: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of n windows in blocks of `block` consecutive windows.

    Overlapping windows cut from one stream share most of their values; splitting them one by one
    would leak training data into validation and make the calibrated threshold too low.
    """
    block = max(1, min(block, max(1, n // MIN_WINDOWS)))
    n_blocks = math.ceil(n / block)
    order = np.random.default_rng(seed).permutation(n_blocks)
    n_val_blocks = min(max(1, round(n_blocks * val_fraction)), n_blocks - 1)
    block_of = np.arange(n) // block
    is_val = np.isin(block_of, order[:n_val_blocks])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class WindowDataModule(pl.LightningDataModule):
    """Splits raw windows 70/30 (seeded), fits the scaler on the training part, serves scaled tensors.

    The validation part doubles as the test set of the final metrics table and as the calibration set.
    """

    def __init__(self, windows: np.ndarray, config: TrainConfig, block: int = 1) -> None:
        super().__init__()
        self.config = config
        train_index, val_index = split_indices(len(windows), config.val_fraction, config.seed, block)
        self.train_raw = windows[train_index]
        self.val_raw = windows[val_index]
        self.scaler = Scaler.fit(self.train_raw, config.scale_floor)
        self._train = TensorDataset(torch.from_numpy(self.scaler.transform(self.train_raw)))
        self._val = TensorDataset(torch.from_numpy(self.scaler.transform(self.val_raw)))

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.config.seed)
        return DataLoader(
            self._train,
            batch_size=self.config.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=self.config.num_workers,
            drop_last=len(self._train) > self.config.batch_size,
        )

    def _eval_loader(self) -> DataLoader:
        return DataLoader(self._val, batch_size=max(self.config.batch_size, 256), num_workers=self.config.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader()


class VRAELightning(pl.LightningModule):
    """Negative ELBO with KL warm-up and free bits; logs loss, reconstruction, KL and active units."""

    def __init__(self, model_config: dict[str, Any], train_config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_config = TrainConfig.from_dict(train_config)
        self.model = VRAE(VRAEConfig.from_dict(model_config))

    def _step(self, batch: list[torch.Tensor], stage: str, beta: float) -> torch.Tensor:
        (x,) = batch
        x_hat, mu, logvar = self.model(x)
        terms = vrae_loss(x, x_hat, mu, logvar, beta=beta, free_bits=self.train_config.free_bits)
        on_step = stage == "train"
        self.log(f"{stage}_loss", terms["loss"], prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(x))
        self.log(f"{stage}_recon", terms["recon"], on_step=False, on_epoch=True, batch_size=len(x))
        self.log(f"{stage}_mse", terms["mse"], on_step=False, on_epoch=True, batch_size=len(x))
        self.log(f"{stage}_kl", terms["kl"], prog_bar=stage == "train", on_step=False, on_epoch=True, batch_size=len(x))
        self.log(f"{stage}_active_units", float(active_units(mu)), on_step=False, on_epoch=True, batch_size=len(x))
        return terms["loss"]

    def _beta(self) -> float:
        config = self.train_config
        return config.beta * kl_weight(self.current_epoch, config.kl_schedule, config.kl_warmup_epochs)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.log("beta", self._beta(), on_step=False, on_epoch=True)
        return self._step(batch, "train", self._beta())

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        # Full beta, so val_loss measures the same objective in every epoch and early stopping is fair.
        self._step(batch, "val", self.train_config.beta)

    def test_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test", self.train_config.beta)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.train_config.lr)


class EpochHistory(Callback):
    """Keeps each epoch's logged numbers so they reach TrainResult.metrics without a logger on disk."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = {"epoch": float(trainer.current_epoch)}
        row.update({k: float(v) for k, v in trainer.callback_metrics.items() if not k.endswith("_step")})
        self.epochs.append(row)


def _resolve_preset(preset_or_config: Preset | str, overrides: dict[str, Any] | None) -> Preset:
    preset = get_preset(preset_or_config) if isinstance(preset_or_config, str) else preset_or_config
    return with_overrides(preset, overrides)


def train(
    windows: WindowSet,
    preset_or_config: Preset | str,
    *,
    out: Path,
    progress_bar: bool = True,
    overrides: dict[str, Any] | None = None,
) -> TrainResult:
    """Train, keep the best checkpoint beside `out`, calibrate on validation windows, write the artifact."""
    out = Path(out)
    if out.suffix == ".ckpt":
        raise ConfigError(f"{out}: the artifact would overwrite its own checkpoint; name it e.g. model.pt")
    data = windows.windows
    if data.ndim != 3 or data.shape[0] < MIN_WINDOWS:
        raise DataError(f"training needs at least {MIN_WINDOWS} windows of shape (T, F), got {data.shape}; give more data")
    preset = _resolve_preset(preset_or_config, overrides)
    config = preset.train
    share = level_share(data)
    window_level = choose_window_level(share) if preset.model.window_level == "auto" else preset.model.window_level
    model_config = VRAEConfig.from_dict({**preset.model.to_dict(), "n_features": int(data.shape[2]),
                                         "sequence_length": int(data.shape[1]), "window_level": window_level})
    pl.seed_everything(config.seed, workers=True, verbose=False)
    overlap_block = math.ceil(data.shape[1] / windows.stride) if windows.series_ids is not None else 1
    datamodule = WindowDataModule(data, config, block=overlap_block)
    # the scaler's record for the worker's level column, read from every training window in time order (the
    # validation blocks too: a series' halves must be whole stretches of its time)
    datamodule.scaler.level_wander = level_wander(data, windows.series_ids, windows.end_timestamps,
                                                  windows.interval_ms)
    module = VRAELightning(model_config.to_dict(), config.to_dict())
    checkpoint_path = out.with_suffix(".ckpt")
    out.parent.mkdir(parents=True, exist_ok=True)
    history = EpochHistory()
    with tempfile.TemporaryDirectory(prefix="vrae-lightning-") as scratch:
        # Lightning writes into scratch; only the final, calibrated checkpoint lands beside `out`.
        checkpoint = ModelCheckpoint(dirpath=scratch, filename="best", monitor="val_loss", mode="min")
        trainer = pl.Trainer(
            default_root_dir=scratch,
            max_epochs=config.epochs,
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=config.strategy,
            gradient_clip_val=config.grad_clip if config.grad_clip > 0 else None,
            callbacks=[EarlyStopping(monitor="val_loss", mode="min", patience=config.patience), checkpoint, history],
            logger=False,
            enable_progress_bar=progress_bar,
            enable_model_summary=progress_bar,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, datamodule=datamodule)
        best_path = Path(checkpoint.best_model_path)
        test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=str(best_path), verbose=True)[0]
        best_state = torch.load(best_path, map_location="cpu", weights_only=True)

    model = module.model.eval()  # trainer.test restored the best weights
    calibrated = calibrate(model, datamodule.scaler, datamodule.val_raw, threshold_method=config.threshold_method,
                           risk=config.risk, quantile=config.quantile, tail_quantile=config.tail_quantile)
    metadata = artifact_metadata(calibrated, features=list(windows.feature_names), stride=int(windows.stride),
                                 training_config=config.to_dict(), data_fingerprint=fingerprint(data),
                                 interval_ms=windows.interval_ms)
    best_state[EXPORT_KEY] = metadata
    torch.save(best_state, checkpoint_path)
    save_artifact(calibrated.module, metadata, out)
    metrics = {
        "epochs_trained": trainer.current_epoch,
        "best_val_loss": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else None,
        "test": {k: float(v) for k, v in test_metrics.items()},
        "n_train_windows": int(len(datamodule.train_raw)),
        "n_val_windows": int(len(datamodule.val_raw)),
        "window_level": window_level,
        "level_share": share,
        "val_score_p50": float(np.quantile(calibrated.scores, 0.5)),
        "val_score_p99": float(np.quantile(calibrated.scores, 0.99)),
        "threshold": calibrated.threshold.threshold,
        "score_threshold": calibrated.threshold.score_threshold,
        "history": history.epochs,
    }
    return TrainResult(artifact_path=out, checkpoint_path=checkpoint_path, metrics=metrics, metadata=metadata)


def export_from_checkpoint(checkpoint: Path, out: Path) -> Path:
    """Rebuild the artifact from a checkpoint written by `train`; scores are identical to the original."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ArtifactError(f"{checkpoint}: no such checkpoint; check the path")
    try:
        # weights_only: a checkpoint from elsewhere must not be able to run code when we read it.
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a corrupt, foreign or unsafe file
        raise ArtifactError(f"{checkpoint}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or EXPORT_KEY not in state or "state_dict" not in state:
        raise ArtifactError(f"{checkpoint}: no calibration inside (interrupted or foreign run); re-run vrae train")
    metadata = dict(state[EXPORT_KEY])
    model = VRAE(VRAEConfig.from_dict(metadata["model_config"]))
    prefix = "model."
    model.load_state_dict({k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)})
    module = ScoringModule(
        model.eval(), Scaler.from_dict(metadata["scaler"]), Calibration.from_dict(metadata["calibration"])
    )
    save_artifact(module, metadata, out)
    return Path(out)
