"""The conditional VAE: shapes, gradients, the loss against hand computation, a tiny overfit,
checkpoints, and the sampling API (seeded, in [0, 1], grade-dependent)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import quiet_trainer  # tests/ is on sys.path
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from drvae.metrics.latent import gaussian_kl
from drvae.models.checkpoints import CheckpointError, check_vae_fits, load_vae
from drvae.models.components.conditioning import LabelCode
from drvae.models.components.conv_vae import LOGVAR_RANGE, Decoder, Encoder, make_norm
from drvae.models.components.hierarchical_vae import gaussian_kl_between
from drvae.models.vae import CHECKPOINT_KIND, ConditionalVAE
from drvae.models.vae_loss import (
    beta_at,
    kl_with_free_bits,
    reconstruction_floor,
    reconstruction_loss,
)

# Outside a Trainer `self.log` only warns; that is expected here, so ignore it per test.
NO_TRAINER_LOG = pytest.mark.filterwarnings("ignore:You are trying to `self.log:UserWarning")

TINY = dict(image_size=16, depth=2, width=4, latent_dim=4)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def images_uint8(n: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


def blobs(n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) floats in [0, 1]: one smooth coloured Gaussian blob per image."""
    grid = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    out = []
    for i in range(n):
        angle = 2 * math.pi * i / n
        cy, cx = 0.5 * math.sin(angle), 0.5 * math.cos(angle)
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.3**2))  # (S, S)
        colour = torch.tensor([0.9, 0.3 + 0.6 * (i % 2), 0.2 + 0.1 * i])[:, None, None]
        out.append(colour.clamp(0, 1) * blob)
    return torch.stack(out)


# ------------------------------------------------------------------ encoder / decoder shapes


@pytest.mark.parametrize(("image_size", "depth"), [(32, 3), (48, 4), (64, 4), (128, 5), (256, 6)])
@pytest.mark.parametrize("conditioning", ["concat", "film"])
@pytest.mark.parametrize("label_embedding", ["onehot", "learned"])
@pytest.mark.parametrize("num_classes", [0, 5])
def test_encoder_decoder_shapes(
    image_size: int, depth: int, conditioning: str, label_embedding: str, num_classes: int
) -> None:
    arch = dict(
        image_size=image_size,
        width=4,
        depth=depth,
        latent_dim=6,
        num_classes=num_classes,
        conditioning=conditioning,
        label_embedding=label_embedding,
        embed_dim=3,
    )
    encoder, decoder = Encoder(**arch), Decoder(**arch)
    assert encoder.bottleneck == decoder.bottleneck == image_size // 2**depth
    x = torch.rand(2, 3, image_size, image_size)
    grades = torch.tensor([0, 4]) if num_classes else None
    mu, logvar = encoder(x, grades)
    assert mu.shape == logvar.shape == (2, 6)
    assert decoder(mu, grades).shape == x.shape


@pytest.mark.parametrize(("image_size", "depth"), [(40, 4), (24, 4), (8, 4), (32, 0)])
def test_a_size_the_depth_does_not_divide_is_refused(image_size: int, depth: int) -> None:
    for module in (Encoder, Decoder):
        with pytest.raises(ValueError, match=f"image_size {image_size}"):
            module(image_size=image_size, depth=depth, width=4, latent_dim=4)
    with pytest.raises(ValueError, match=f"image_size {image_size}"):
        ConditionalVAE(image_size=image_size, depth=depth, width=4, latent_dim=4)


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="norm"):
        Encoder(image_size=16, depth=2, width=4, latent_dim=4, norm="layer")
    with pytest.raises(ValueError, match="conditioning"):
        Decoder(image_size=16, depth=2, width=4, latent_dim=4, conditioning="add")
    with pytest.raises(ValueError, match="label_embedding"):
        Encoder(image_size=16, depth=2, width=4, latent_dim=4, label_embedding="sinusoid")
    with pytest.raises(ValueError, match="reconstruction"):
        ConditionalVAE(**TINY, reconstruction="l1")
    with pytest.raises(ValueError, match="kl_warmup"):
        ConditionalVAE(**TINY, kl_warmup="exponential")
    with pytest.raises(ValueError, match="num_classes"):
        ConditionalVAE(**TINY, num_classes=-1)
    with pytest.raises(ValueError, match="beta"):
        ConditionalVAE(**TINY, beta=-0.5)


@pytest.mark.parametrize("channels", [4, 6, 8, 12, 14, 22, 30, 56, 132, 264])
def test_group_norm_groups_divide_the_channels(channels: int) -> None:
    norm = make_norm("group", channels)
    assert isinstance(norm, nn.GroupNorm)
    assert channels % norm.num_groups == 0 and 1 <= norm.num_groups <= 32
    if (channels % 4 == 0 and channels // 4 <= 32) or channels % 128 == 0:
        assert norm.num_groups == min(32, channels // 4)  # the intended count, when it fits


@pytest.mark.parametrize("norm", ["batch", "group", "instance", "none"])
@pytest.mark.parametrize("width", [4, 7])
def test_every_norm_builds_and_runs(norm: str, width: int) -> None:
    vae = ConditionalVAE(image_size=16, depth=3, width=width, latent_dim=4, norm=norm)
    logits, mu, _ = vae(torch.rand(2, 3, 16, 16), torch.tensor([1, 2]))
    assert logits.shape == (2, 3, 16, 16) and mu.shape == (2, 4)
    assert torch.isfinite(logits).all()


def test_conditional_encoder_needs_grades() -> None:
    encoder = Encoder(image_size=16, depth=2, width=4, latent_dim=4, num_classes=5)
    with pytest.raises(ValueError, match="pass grades"):
        encoder(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="3 grades for a batch of 2"):
        encoder(torch.rand(2, 3, 16, 16), torch.tensor([0, 1, 2]))


def test_a_wild_encoder_keeps_the_kl_finite() -> None:
    """A huge encoder output gives a clamped logvar, so exp(logvar) and the KL stay finite
    (a 128 px conv VAE's KL reached infinity before the clamp)."""
    encoder = Encoder(image_size=16, depth=2, width=4, latent_dim=4, num_classes=5)
    with torch.no_grad():
        encoder.to_moments.bias.fill_(1e4)
    mu, logvar = encoder(torch.rand(2, 3, 16, 16), torch.tensor([0, 1]))
    assert logvar.max().item() == LOGVAR_RANGE[1]
    assert torch.isfinite(gaussian_kl(mu, logvar)).all()
    with torch.no_grad():
        encoder.to_moments.bias.fill_(-1e4)
    assert (
        encoder(torch.rand(2, 3, 16, 16), torch.tensor([0, 1]))[1].min().item() == LOGVAR_RANGE[0]
    )


# ------------------------------------------------------------------ gradients


@NO_TRAINER_LOG
@pytest.mark.parametrize(
    ("options", "zero_at_init"),
    [
        (dict(num_classes=5, conditioning="concat", label_embedding="learned"), ()),
        (dict(num_classes=5, conditioning="concat", norm="none"), ()),
        # FiLM starts as the identity (zero projection), so nothing reaches the label
        # embedding through it at the first step; its gradient is zero but present.
        (
            dict(num_classes=5, conditioning="film", label_embedding="learned", norm="group"),
            ("code.embedding",),
        ),
        (dict(num_classes=0, norm="instance"), ()),
    ],
)
def test_every_parameter_gets_a_finite_gradient(options: dict, zero_at_init: tuple) -> None:
    torch.manual_seed(0)
    vae = ConditionalVAE(**TINY, **options)
    loss = vae.training_step((images_uint8(4, 16), torch.tensor([0, 1, 3, 4])), 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for name, parameter in vae.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        if not any(part in name for part in zero_at_init):
            assert parameter.grad.abs().sum() > 0, name


# ------------------------------------------------------------------ the loss, by hand


def test_bce_reconstruction_by_hand() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 2, 2, generator=generator, dtype=torch.float64) * 3
    x = torch.rand(2, 3, 2, 2, generator=generator, dtype=torch.float64)
    p = torch.sigmoid(logits)
    by_hand = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).flatten(1).sum(1)
    got = reconstruction_loss(logits, x, "bce")
    assert got.shape == (2,)
    torch.testing.assert_close(got, by_hand, rtol=1e-10, atol=1e-10)
    # a single pixel, by numbers: logit 0 and target 1 cost log 2
    one = reconstruction_loss(torch.zeros(1, 1), torch.ones(1, 1), "bce")
    assert one.item() == pytest.approx(math.log(2))


def test_mse_reconstruction_by_hand() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 3, 2, 2, generator=generator, dtype=torch.float64)
    x = torch.rand(3, 3, 2, 2, generator=generator, dtype=torch.float64)
    by_hand = ((torch.sigmoid(logits) - x) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction_loss(logits, x, "mse"), by_hand)
    with pytest.raises(ValueError, match="reconstruction"):
        reconstruction_loss(logits, x, "l1")


MU = torch.tensor([[0.5, -1.0, 2.0, 0.0]], dtype=torch.float64)
LOGVAR = torch.tensor([[0.3, -0.7, 1.0, -2.0]], dtype=torch.float64)


def test_gaussian_kl_closed_form() -> None:
    sigma2 = LOGVAR.exp()
    by_hand = 0.5 * (MU**2 + sigma2 - torch.log(sigma2) - 1)
    kl = gaussian_kl(MU, LOGVAR)
    assert kl.shape == MU.shape
    torch.testing.assert_close(kl, by_hand)
    q = torch.distributions.Normal(MU, (0.5 * LOGVAR).exp())
    p = torch.distributions.Normal(torch.zeros_like(MU), torch.ones_like(MU))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p))
    assert (kl >= 0).all()
    zero = gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5))
    assert torch.equal(zero, torch.zeros(3, 5))


def test_gaussian_kl_matches_a_monte_carlo_estimate() -> None:
    torch.manual_seed(0)
    q = torch.distributions.Normal(MU[0], (0.5 * LOGVAR[0]).exp())
    p = torch.distributions.Normal(torch.zeros(4, dtype=torch.float64), 1.0)
    z = q.sample((200_000,))  # (N, D)
    estimate = (q.log_prob(z) - p.log_prob(z)).mean(0)  # (D,)
    closed = gaussian_kl(MU, LOGVAR)[0]
    torch.testing.assert_close(estimate, closed, rtol=0.03, atol=0.01)
    # the sum too (what enters the loss per image)
    assert estimate.sum().item() == pytest.approx(closed.sum().item(), rel=0.02)


def test_free_bits() -> None:
    kl = torch.tensor([[0.1, 2.0], [0.3, 4.0]])
    torch.testing.assert_close(kl_with_free_bits(kl, 0.0), torch.tensor([2.1, 4.3]))
    torch.testing.assert_close(kl_with_free_bits(kl, -1.0), torch.tensor([2.1, 4.3]))
    # batch means (0.2, 3.0), floored per dimension at 0.5: 0.5 + 3.0 for every image
    torch.testing.assert_close(kl_with_free_bits(kl, 0.5), torch.tensor([3.5, 3.5]))
    # a floor above every dimension: floor * D
    torch.testing.assert_close(kl_with_free_bits(kl, 10.0), torch.tensor([20.0, 20.0]))


def test_beta_schedules() -> None:
    assert beta_at(0, 0.7, "none") == 0.7
    assert beta_at(10**6, 0.7, "none") == 0.7
    assert beta_at(0, 0.7, "linear", warmup_steps=0) == 0.7
    linear = [beta_at(s, 2.0, "linear", warmup_steps=100) for s in (0, 50, 100, 5000)]
    assert linear == pytest.approx([0.0, 1.0, 2.0, 2.0])
    cyc = dict(warmup="cyclical", warmup_steps=100, cycles=3)
    steps = [0, 25, 50, 75, 99, 100, 125, 250, 299, 300, 10**5]
    expect = [0.0, 0.5, 1.0, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert [beta_at(s, 1.0, **cyc) for s in steps] == pytest.approx(expect)
    with pytest.raises(ValueError, match="kl_warmup"):
        beta_at(5, 1.0, "sigmoid")


# ------------------------------------------------------------------ learning


@pytest.mark.parametrize(
    "arch",
    [{"norm": "none"}, {"norm": "group"}, {"architecture": "hierarchical", "spatial_depth": 1}],
)
def test_a_tiny_batch_overfits(arch: dict) -> None:
    torch.manual_seed(0)
    vae = ConditionalVAE(image_size=16, depth=2, width=8, latent_dim=8, **arch)
    x = blobs(8, 16)
    grades = torch.arange(8) % 5
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)

    def recon_of_mean() -> float:
        logits = torch.logit(vae.reconstruct(x, grades).clamp(1e-6, 1 - 1e-6))
        return reconstruction_loss(logits, x).mean().item()

    start = recon_of_mean()
    for _ in range(200):
        logits, _, kl_per_element = vae(x, grades)
        loss = (reconstruction_loss(logits, x) + kl_per_element.sum(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = recon_of_mean()
    # BCE against soft targets has a floor (the targets' entropy); measure above it.
    floor = reconstruction_loss(torch.logit(x.clamp(1e-6, 1 - 1e-6)), x).mean().item()
    assert end < 0.5 * start, (start, end)
    assert end - floor < 0.2 * (start - floor), (start, end, floor)  # ~0.02 in practice


# ------------------------------------------------------------------ checkpoints


def fit_tiny(tmp_path: Path, **options) -> tuple[ConditionalVAE, Path]:
    torch.manual_seed(0)
    images = images_uint8(16, 16)
    grades = torch.arange(16) % 5
    loader = DataLoader(TensorDataset(images, grades), batch_size=8)
    optimizer = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-3}
    vae = ConditionalVAE(**TINY, optimizer=optimizer, **options)
    trainer = quiet_trainer(default_root_dir=tmp_path)
    trainer.fit(vae, loader, loader)
    path = tmp_path / "vae.ckpt"
    trainer.save_checkpoint(path)
    return vae, path


@pytest.mark.parametrize(
    "options",
    [
        dict(conditioning="film", label_embedding="learned", norm="batch"),
        dict(num_classes=0, norm="group", kl_warmup="linear", kl_warmup_steps=7),
        dict(architecture="hierarchical", spatial_depth=1, label_embedding="learned"),
    ],
)
def test_checkpoint_round_trip(tmp_path: Path, options: dict) -> None:
    vae, path = fit_tiny(tmp_path, **options)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["drvae"] == CHECKPOINT_KIND
    state = vae.state_dict()
    for loaded in (ConditionalVAE.load_from_checkpoint(path), load_vae(path)):
        assert dict(loaded.hparams) == dict(vae.hparams)
        assert loaded.state_dict().keys() == state.keys()
        for key, tensor in loaded.state_dict().items():
            assert torch.equal(tensor, state[key]), key
    assert not load_vae(path).training
    assert any("running_mean" in k for k in state) == (options.get("norm") == "batch")
    # the trained weights, not a fresh initialisation, came back
    fresh = ConditionalVAE(**dict(vae.hparams))
    assert not torch.equal(fresh.decoder.to_logits.weight, load_vae(path).decoder.to_logits.weight)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {}}, plain)
    wrong = tmp_path / "wrong.ckpt"
    torch.save({"drvae": "drvae.Classifier/1", "state_dict": {}}, wrong)
    listed = tmp_path / "list.ckpt"
    torch.save([1, 2, 3], listed)
    for path in (text, plain, wrong, listed, tmp_path / "missing.ckpt"):
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            load_vae(path)
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            check_vae_fits(path, 16, [0])
    assert issubclass(CheckpointError, ValueError)


def test_check_vae_fits(tmp_path: Path) -> None:
    _, path = fit_tiny(tmp_path)
    assert check_vae_fits(path, 16, [0, 1, 2, 3, 4])["num_classes"] == 5
    with pytest.raises(CheckpointError, match=r"16 px.*image_size is 32"):
        check_vae_fits(path, 32, [0])
    with pytest.raises(CheckpointError, match=r"\[5\]"):
        check_vae_fits(path, 16, [0, 5])
    with pytest.raises(CheckpointError, match=r"\[-1\]"):
        check_vae_fits(path, 16, [-1, 2])


def test_check_vae_fits_unconditional_takes_any_grade(tmp_path: Path) -> None:
    _, path = fit_tiny(tmp_path, num_classes=0)
    assert check_vae_fits(path, 16, [3])["num_classes"] == 0
    with pytest.raises(CheckpointError, match="image_size is 8"):
        check_vae_fits(path, 8, [3])


# ------------------------------------------------------------------ sampling API


def untrained(**options) -> ConditionalVAE:
    torch.manual_seed(0)
    return ConditionalVAE(**TINY, **options).eval()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("num_classes", [0, 5])
def test_sample_is_seeded_and_in_range(num_classes: int) -> None:
    vae = untrained(num_classes=num_classes)
    grades = [0, 1, 2, 4, 4, 3]
    a = vae.sample(grades, 0.8, generator=seeded(1))
    b = vae.sample(grades, 0.8, generator=seeded(1))
    c = vae.sample(grades, 0.8, generator=seeded(2))
    assert a.shape == (6, 3, 16, 16)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert not a.requires_grad
    # temperature scales z: a colder draw from the same seed is a different image
    assert not torch.allclose(a, vae.sample(grades, 0.1, generator=seeded(1)))


@pytest.mark.parametrize("conditioning", ["concat", "film"])
@pytest.mark.parametrize("label_embedding", ["onehot", "learned"])
def test_the_grade_changes_the_sample(conditioning: str, label_embedding: str) -> None:
    vae = untrained(conditioning=conditioning, label_embedding=label_embedding)
    if conditioning == "film":
        # FiLM starts as the identity: at initialisation the grade cannot matter ...
        same = [vae.sample([g, g], generator=seeded(3)) for g in (0, 4)]
        assert torch.equal(same[0], same[1])
        # ... so give its projections weights, as training would.
        for module in vae.modules():
            if module.__class__.__name__ == "FiLM":
                nn.init.normal_(module.project.weight, std=0.5)
    images = [vae.sample([g, g], generator=seeded(3)) for g in range(5)]
    for g in range(1, 5):
        assert (images[g] - images[0]).abs().max() > 1e-4, g


def test_sample_refuses_bad_arguments() -> None:
    vae = untrained()
    for temperature in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            vae.sample([0], temperature)
    for grades in ([5], [0, -1], torch.tensor([7])):
        with pytest.raises(ValueError, match="outside"):
            vae.sample(grades)
    with pytest.raises(ValueError, match="outside"):
        vae.reconstruct(images_uint8(1, 16), [5])


@pytest.mark.parametrize("num_classes", [0, 5])
def test_reconstruct(num_classes: int) -> None:
    vae = untrained(num_classes=num_classes)
    x = images_uint8(3, 16)
    grades = [0, 2, 4] if num_classes else None
    out = vae.reconstruct(x, grades)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    # uint8 and the same image as floats in [0, 1] are the same input
    torch.testing.assert_close(vae.reconstruct(x.float() / 255, grades), out)
    if num_classes:
        with pytest.raises(ValueError, match="grades"):
            vae.reconstruct(x)


@pytest.mark.parametrize(
    "options",
    [
        dict(conditioning="concat"),
        dict(conditioning="film", label_embedding="learned"),
        dict(num_classes=0),
        dict(architecture="hierarchical", spatial_depth=1),
    ],
)
def test_interpolate_ends_at_the_reconstructions(options: dict) -> None:
    vae = untrained(**options)
    if options.get("conditioning") == "film" or "architecture" in options:
        for module in vae.modules():
            if module.__class__.__name__ == "FiLM":
                nn.init.normal_(module.project.weight, std=0.5)
    x = images_uint8(2, 16, seed=5)
    conditional = vae.hparams.num_classes > 0
    grade_a, grade_b = (0, 4) if conditional else (None, None)
    frames = vae.interpolate(x[0], x[1], grade_a, grade_b, steps=5)
    assert frames.shape == (5, 3, 16, 16)
    assert frames.min() >= 0 and frames.max() <= 1
    a = vae.reconstruct(x[:1], [grade_a] if conditional else None)[0]
    b = vae.reconstruct(x[1:], [grade_b] if conditional else None)[0]
    torch.testing.assert_close(frames[0], a, atol=1e-5, rtol=0)
    torch.testing.assert_close(frames[-1], b, atol=1e-5, rtol=0)
    assert not torch.allclose(frames[2], frames[0])  # the middle is neither end
    assert not torch.allclose(frames[2], frames[-1])
    if conditional:
        with pytest.raises(ValueError, match="grade_a and grade_b"):
            vae.interpolate(x[0], x[1], 0, None)
        with pytest.raises(ValueError, match="grade_a and grade_b"):
            vae.interpolate(x[0], x[1])


# ------------------------------------------------------------------ label codes


@pytest.mark.parametrize("kind", ["onehot", "learned"])
def test_one_hot_soft_labels_equal_hard_grades(kind: str) -> None:
    torch.manual_seed(0)
    code = LabelCode(5, kind, dim=7)
    hard = torch.tensor([0, 3, 4, 1])
    soft = torch.nn.functional.one_hot(hard, 5).float()
    assert code(hard).shape == (4, 5 if kind == "onehot" else 7)
    torch.testing.assert_close(code(soft), code(hard), rtol=0, atol=0)
    # a half-and-half weight row is the average code (the code is linear in the weights)
    half = torch.tensor([[0.5, 0.0, 0.0, 0.5, 0.0]])
    expected = 0.5 * (code(torch.tensor([0])) + code(torch.tensor([3])))
    torch.testing.assert_close(code(half), expected)
    with pytest.raises(ValueError, match="label_embedding"):
        LabelCode(5, "hashed")


def test_bce_floor_is_the_loss_of_a_perfect_decoder() -> None:
    """BCE on continuous pixels cannot reach 0: its floor is their binary entropy."""
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64).clamp(0.01, 0.99)
    floor = reconstruction_floor(x)
    assert torch.allclose(reconstruction_loss(torch.logit(x), x), floor)
    assert (reconstruction_loss(torch.randn_like(x), x) > floor).all()
    grey = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    assert reconstruction_floor(grey).item() == pytest.approx(3 * 64 * math.log(2))
    assert reconstruction_floor(x, "mse").abs().sum() == 0


@pytest.mark.parametrize(("image_size", "depth"), [(16, 1), (32, 3), (64, 4), (128, 5)])
def test_nearest_upsampling_decodes_to_the_image_size(image_size: int, depth: int) -> None:
    decoder = Decoder(image_size, width=4, depth=depth, latent_dim=8, upsample="nearest")
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in decoder.modules())
    logits = decoder(torch.randn(2, 8), torch.tensor([0, 4]))
    assert logits.shape == (2, 3, image_size, image_size)
    with pytest.raises(ValueError, match="upsample must be"):
        Decoder(image_size, width=4, depth=depth, upsample="bilinear")


def test_optimizer_and_scheduler_come_from_partial_config_nodes() -> None:
    optimizer = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05, "momentum": 0.9}
    scheduler = {
        "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "_partial_": True,
        "patience": 2,
    }
    model = ConditionalVAE(**TINY, optimizer=optimizer, scheduler=scheduler)
    configured = model.configure_optimizers()
    assert isinstance(configured["optimizer"], torch.optim.SGD)
    assert configured["optimizer"].defaults["lr"] == 0.05
    schedule = configured["lr_scheduler"]
    assert isinstance(schedule["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert schedule["monitor"] == "val/loss"
    assert isinstance(ConditionalVAE(**TINY).configure_optimizers(), torch.optim.Adam)


def test_a_per_step_schedule_follows_the_trainers_length(tmp_path: Path) -> None:
    """WarmupCosine (the per-step schedule classifier=dr_recipe uses) gets the training
    length from the Trainer: 2 epochs of 4 batches, warm-up then decay to its floor."""
    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    loader = DataLoader(TensorDataset(images, torch.arange(16) % 5), batch_size=4)
    scheduler = {
        "_target_": "drvae.models.optim.WarmupCosine",
        "_partial_": True,
        "warmup_fraction": 0.25,
        "min_lr_ratio": 0.01,
    }
    vae = ConditionalVAE(**TINY, scheduler=scheduler)
    trainer = quiet_trainer(default_root_dir=tmp_path, max_epochs=2)
    trainer.fit(vae, loader)
    schedule = trainer.lr_scheduler_configs[0]
    assert schedule.interval == "step" and schedule.scheduler.last_epoch == 8
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-5)


# ------------------------------------------------------------------ the hierarchical VAE

HIERARCHICAL = dict(architecture="hierarchical", latent_dim=6, width=8, spatial_channels=3)


@pytest.mark.parametrize(
    ("image_size", "depth", "spatial_depth"), [(16, 2, 1), (64, 4, 2), (128, 5, 3), (128, 5, 2)]
)
def test_hierarchical_shapes_and_kl_elements(
    image_size: int, depth: int, spatial_depth: int
) -> None:
    vae = ConditionalVAE(
        image_size=image_size, depth=depth, spatial_depth=spatial_depth, **HIERARCHICAL
    )
    x = images_uint8(2, image_size).float() / 255
    logits, mu, kl = vae(x, torch.tensor([0, 4]))
    side = image_size // 2**spatial_depth
    assert logits.shape == x.shape and mu.shape == (2, 6)
    assert kl.shape == (2, 6 + 3 * side * side)  # the top latent, then every z2 element
    assert (kl >= 0).all()
    assert vae.sample([1, 3], generator=seeded(0)).shape == x.shape


def test_hierarchical_spatial_depth_is_checked() -> None:
    for spatial_depth in (0, 2):
        with pytest.raises(ValueError, match="spatial_depth"):
            ConditionalVAE(image_size=16, depth=2, spatial_depth=spatial_depth, **HIERARCHICAL)
    with pytest.raises(ValueError, match="architecture"):
        ConditionalVAE(**TINY, architecture="flat")


def test_hierarchical_kl_between_gaussians_matches_the_closed_form_at_the_prior() -> None:
    mu_q, logvar_q = torch.randn(3, 4), torch.randn(3, 4)
    zeros = torch.zeros(3, 4)
    torch.testing.assert_close(
        gaussian_kl_between(mu_q, logvar_q, zeros, zeros), gaussian_kl(mu_q, logvar_q)
    )
    assert gaussian_kl_between(mu_q, logvar_q, mu_q, logvar_q).abs().max() < 1e-6


def test_hierarchical_sampling_is_seeded_and_draws_the_spatial_latent() -> None:
    torch.manual_seed(0)
    vae = ConditionalVAE(image_size=16, depth=2, spatial_depth=1, **HIERARCHICAL).eval()
    for module in vae.modules():  # give the zero-initialised layers weights, as training would
        if module.__class__.__name__ in ("FiLM", "ResBlock"):
            for p in module.parameters():
                nn.init.normal_(p, std=0.3)
    z = torch.zeros(2, 6)
    a = vae.decode_latent(z, [2, 2], 1.0, seeded(1))
    assert torch.equal(a, vae.decode_latent(z, [2, 2], 1.0, seeded(1)))
    # the same top latent, another draw of z2: another image; at temperature 0 one image
    assert not torch.allclose(a, vae.decode_latent(z, [2, 2], 1.0, seeded(2)))
    cold = vae.decode_latent(z, [2, 2], 0.0, seeded(1))
    assert torch.equal(cold, vae.decode_latent(z, [2, 2], 0.0, seeded(2)))
    assert not torch.allclose(cold, vae.decode_latent(z, [4, 4], 0.0, seeded(1)))  # the grade
    assert vae.encode_means(images_uint8(2, 16), [0, 1]).shape == (2, 6)


def test_posterior_latents_decode_to_the_reconstruction() -> None:
    """Both levels' posterior means, decoded as given latents, are the reconstruction: the
    path a second-stage model of the aggregate posterior decodes through."""
    torch.manual_seed(0)
    vae = ConditionalVAE(image_size=32, depth=3, spatial_depth=1, **HIERARCHICAL).eval()
    for module in vae.modules():  # weights in the zero-initialised layers, as training gives
        if module.__class__.__name__ in ("FiLM", "ResBlock") or module is vae.decoder.to_posterior:
            for p in module.parameters():
                nn.init.normal_(p, std=0.3)
    x, grades = images_uint8(3, 32), [0, 2, 4]
    (mu1, logvar1), (mu2, logvar2) = vae.posterior_latents(x, grades)
    assert mu1.shape == logvar1.shape == (3, 6)
    assert mu2.shape == logvar2.shape == (3, 3, 16, 16)
    torch.testing.assert_close(mu1, vae.encode_means(x, grades))
    torch.testing.assert_close(
        vae.decode_latent(mu1, grades, spatial=mu2), vae.reconstruct(x, grades)
    )
    # another spatial latent, another image; the prior's draw is not what was given
    assert not torch.allclose(
        vae.decode_latent(mu1, grades, spatial=mu2 + 1), vae.reconstruct(x, grades)
    )
    conv = ConditionalVAE(**TINY).eval()
    ((mu, _),) = conv.posterior_latents(x[:, :, :16, :16], grades)
    torch.testing.assert_close(mu, conv.encode_means(x[:, :, :16, :16], grades))


# ------------------------------------------------------------------ the auxiliary grade loss


@NO_TRAINER_LOG
def test_the_grade_probe_learns_from_real_images_only() -> None:
    torch.manual_seed(0)
    vae = ConditionalVAE(**TINY, grade_loss_weight=10.0)
    x, grades = images_uint8(4, 16), torch.tensor([0, 1, 3, 4])
    vae.training_step((x, grades), 0).backward()
    probe_grads = {n: p.grad.clone() for n, p in vae.grade_probe.named_parameters()}
    vae.zero_grad()
    # the probe's own gradient is that of its loss on the real images, times the weight
    (10.0 * F.cross_entropy(vae.grade_probe(x.float() / 255), grades)).backward()
    for name, p in vae.grade_probe.named_parameters():
        torch.testing.assert_close(probe_grads[name], p.grad, msg=name)
    # and the decoder hears the probe: its gradient changes with the weight
    vae.zero_grad()
    torch.manual_seed(1)
    vae.training_step((x, grades), 0).backward()
    with_probe = vae.decoder.to_logits.weight.grad.clone()
    plain = ConditionalVAE(**TINY)
    plain.load_state_dict({k: v for k, v in vae.state_dict().items() if "grade_probe" not in k})
    torch.manual_seed(1)
    plain.training_step((x, grades), 0).backward()
    assert not torch.allclose(with_probe, plain.decoder.to_logits.weight.grad)


def test_the_grade_loss_needs_grades() -> None:
    with pytest.raises(ValueError, match="grade_loss_weight"):
        ConditionalVAE(**TINY, num_classes=0, grade_loss_weight=1.0)
    with pytest.raises(ValueError, match="grade_loss_weight"):
        ConditionalVAE(**TINY, grade_loss_weight=-1.0)
