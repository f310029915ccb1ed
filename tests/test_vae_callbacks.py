"""Image logging to each logger kind, and the VAE's image-grid callback inside a real fit."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import quiet_trainer  # tests/ is on sys.path
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from drvae.callbacks import VAEImageGrid, log_image
from drvae.callbacks.vae_images import to_grid_image
from drvae.models.vae import ConditionalVAE

SIZE = 16


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def picture(height: int = 10, width: int = 14) -> np.ndarray:
    """An (H, W, 3) uint8 image with distinct pixels (so a round trip is checkable)."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def trainer_with(logger, tmp_path: Path, **options) -> L.Trainer:
    return quiet_trainer(logger=logger, default_root_dir=tmp_path, **options)


# ------------------------------------------------------------------ log_image


def test_log_image_csv_writes_a_png(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    trainer = trainer_with(logger, tmp_path)
    image = picture()
    places = log_image(trainer, "vae/samples", image, "a caption")
    path = Path(logger.log_dir) / "images" / "vae_samples_epoch000.png"
    assert places == [str(path)]
    assert path.parent.parent == tmp_path / "lightning_logs" / "version_0"
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), image)


def test_log_image_tensorboard_writes_an_event(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path)
    trainer = trainer_with(logger, tmp_path)
    places = log_image(trainer, "vae/samples", picture(), "a caption")
    assert places == ["tensorboard:vae/samples"]
    logger.experiment.flush()
    events = list(Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    accumulator = EventAccumulator(str(events[0]))
    accumulator.Reload()
    assert "vae/samples" in accumulator.Tags()["images"]
    (stored,) = accumulator.Images("vae/samples")
    assert (stored.height, stored.width) == (10, 14)
    assert not list(tmp_path.rglob("*.png"))  # no PNG files for TensorBoard


def test_log_image_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(offline=True, save_dir=tmp_path, project="t")
    try:
        trainer = trainer_with(logger, tmp_path)
        places = log_image(trainer, "vae/samples", picture(), "a caption")
    finally:
        wandb.finish()
    assert places == ["wandb:vae/samples"]
    media = list((tmp_path / "wandb").glob("**/media/images/**/*.png"))
    assert len(media) == 1
    assert np.array_equal(np.asarray(Image.open(media[0]).convert("RGB")), picture())


def test_log_image_to_several_loggers(tmp_path: Path) -> None:
    csv, tensorboard = CSVLogger(tmp_path / "csv"), TensorBoardLogger(tmp_path / "tb")
    trainer = trainer_with([csv, tensorboard], tmp_path)
    places = log_image(trainer, "grid", picture())
    assert places == [str(Path(csv.log_dir) / "images" / "grid_epoch000.png"), "tensorboard:grid"]
    assert Path(places[0]).is_file()


def test_to_grid_image() -> None:
    images = torch.zeros(6, 3, 4, 4)
    images[1] = 1.0
    images[2] = 2.0  # clamped to 1
    grid = to_grid_image(images, nrow=3)
    assert grid.shape == (2 * (4 + 2) + 2, 3 * (4 + 2) + 2, 3) and grid.dtype == np.uint8
    assert grid[2:6, 2:6].max() == 0  # the first image, black
    assert (grid[2:6, 8:12] == 255).all() and (grid[2:6, 14:18] == 255).all()


# ------------------------------------------------------------------ VAEImageGrid in a fit


def loaders() -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    grades = torch.arange(24) % 5
    train = DataLoader(TensorDataset(images[:16], grades[:16]), batch_size=8)
    val = DataLoader(TensorDataset(images[16:], grades[16:]), batch_size=8)
    return train, val


def fit_with_grid(tmp_path: Path, num_classes: int = 5, **options) -> tuple[VAEImageGrid, Path]:
    torch.manual_seed(0)
    vae = ConditionalVAE(image_size=SIZE, depth=2, width=4, latent_dim=4, num_classes=num_classes)
    callback = VAEImageGrid(per_grade=3, **{"n_reconstructions": 4, **options})
    logger = CSVLogger(tmp_path)
    trainer = trainer_with(logger, tmp_path, max_epochs=2, callbacks=[callback])
    assert trainer.num_sanity_val_steps > 0  # the sanity check runs, and must log nothing
    trainer.fit(vae, *loaders())
    return callback, Path(logger.log_dir) / "images"


def png_shape(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.height, image.width


@pytest.mark.parametrize(("num_classes", "rows"), [(5, 5), (0, 1)])
def test_image_grid_each_epoch(tmp_path: Path, num_classes: int, rows: int) -> None:
    callback, images = fit_with_grid(tmp_path, num_classes)
    order = [
        f"vae_{kind}_epoch{e:03d}.png" for e in (0, 1) for kind in ("samples", "reconstructions")
    ]
    assert {p.name for p in images.iterdir()} == set(order)
    # two epochs x two images, and none from the sanity check
    assert callback.logged == [str(images / name) for name in order]
    cell = SIZE + 2
    assert png_shape(images / "vae_samples_epoch000.png") == (rows * cell + 2, 3 * cell + 2)
    assert png_shape(images / "vae_reconstructions_epoch001.png") == (2 * cell + 2, 4 * cell + 2)
    # the samples come from a fixed seed but the weights moved: epoch 0 and 1 differ
    first, second = (np.asarray(Image.open(images / f"vae_samples_epoch00{e}.png")) for e in (0, 1))
    assert not np.array_equal(first, second)
    # top row of the reconstructions grid: the validation images themselves
    _, val = loaders()
    originals = next(iter(val))[0][:4]  # (4, 3, S, S) uint8
    recon = np.asarray(Image.open(images / "vae_reconstructions_epoch000.png").convert("RGB"))
    for i in range(4):
        top = recon[2 : 2 + SIZE, 2 + i * cell : 2 + i * cell + SIZE]
        assert np.array_equal(top, originals[i].permute(1, 2, 0).numpy())


def test_no_real_image_is_logged_with_zero_reconstructions(tmp_path: Path) -> None:
    """`vae.images.n_reconstructions=0` (privacy: logs synced to W&B hold no patient image)."""
    _, images = fit_with_grid(tmp_path, n_reconstructions=0)
    assert sorted(p.name for p in images.iterdir()) == [
        "vae_samples_epoch000.png",
        "vae_samples_epoch001.png",
    ]


def test_image_grid_every_second_epoch(tmp_path: Path) -> None:
    callback, images = fit_with_grid(tmp_path, every_n_epochs=2)
    names = {p.name for p in images.iterdir()}
    assert names == {"vae_samples_epoch001.png", "vae_reconstructions_epoch001.png"}
    assert len(callback.logged) == 2


def test_image_grid_restores_the_mode_and_skips_validate(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vae = ConditionalVAE(image_size=SIZE, depth=2, width=4, latent_dim=4)
    callback = VAEImageGrid(per_grade=2, n_reconstructions=2)
    logger = CSVLogger(tmp_path)
    trainer = trainer_with(logger, tmp_path, max_epochs=1, callbacks=[callback])
    train, val = loaders()
    trainer.fit(vae, train, val)
    assert len(callback.logged) == 2
    # Called directly after the fit (the trainer still reads as fitting, epoch 1), it logs
    # the samples (no batch was kept for reconstructions), from the same seed each time,
    # and leaves the module's mode as it was.
    samples = Path(logger.log_dir) / "images" / "vae_samples_epoch001.png"
    pixels = []
    for training in (True, False):
        vae.train(training)
        callback.on_validation_epoch_end(trainer, vae)
        assert vae.training is training
        pixels.append(np.asarray(Image.open(samples)))
    assert callback.logged[2:] == [str(samples)] * 2
    assert np.array_equal(pixels[0], pixels[1])
    # a validation run is not an epoch of training: nothing more is logged
    trainer.validate(vae, val, verbose=False)
    assert len(callback.logged) == 4
