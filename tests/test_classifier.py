"""The grading classifier: metrics against scikit-learn, the losses, the timm wrapper
(resizing, normalisation, local pretrained weights only), a tiny fit and test with the
confusion-matrix logger, and its checkpoints."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import GRADES, MODEL, SIZE, images_uint8, loader, quiet_trainer  # on sys.path
from lightning.pytorch.loggers import CSVLogger
from PIL import Image
from sklearn import metrics as skm

from drvae.callbacks.confusion import COLUMNS, ConfusionMatrixLogger
from drvae.metrics.grading import grading_metrics
from drvae.models import vae
from drvae.models.checkpoints import CheckpointError, load_classifier, read_checkpoint
from drvae.models.classifier import CHECKPOINT_KIND, GradeClassifier, PretrainedWeightsError
from drvae.models.classifier_loss import FocalLoss, make_loss

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def random_probabilities(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(n, 5, generator=generator)
    targets = torch.randint(0, 5, (n,), generator=generator)
    logits[torch.arange(n), targets] += 1.0  # better than chance, not perfect
    return logits.softmax(dim=1), targets


def computed(probs: torch.Tensor, targets: torch.Tensor, batches: int = 1) -> dict[str, float]:
    metrics = grading_metrics("test/")
    for p, t in zip(probs.chunk(batches), targets.chunk(batches), strict=True):
        metrics.update(p, t)
    return {key: float(value) for key, value in metrics.compute().items()}


# ------------------------------------------------------------------ grading metrics

KEYS = {
    "test/qwk",
    "test/macro_f1",
    "test/balanced_accuracy",
    "test/accuracy",
    "test/auroc",
    "test/referable_sensitivity",
    "test/referable_specificity",
    "test/referable_auroc",
    "test/referable_sensitivity_at_spec80",
    *(f"test/recall_grade{g}" for g in GRADES),
    *(f"test/precision_grade{g}" for g in GRADES),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grading_metrics_equal_scikit_learn(seed: int) -> None:
    probs, targets = random_probabilities(300, seed)
    got = computed(probs, targets, batches=4)  # accumulated over batches
    assert set(got) == KEYS
    y, p = targets.numpy(), probs.numpy()
    pred = p.argmax(axis=1)
    assert set(np.unique(y)) == set(GRADES)  # every grade present: the definitions agree
    expected = {
        "test/qwk": skm.cohen_kappa_score(y, pred, weights="quadratic", labels=list(GRADES)),
        "test/macro_f1": skm.f1_score(y, pred, average="macro"),
        "test/balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "test/accuracy": skm.accuracy_score(y, pred),
        "test/auroc": skm.roc_auc_score(y, p, multi_class="ovr", average="macro"),
    }
    recall = skm.recall_score(y, pred, average=None, labels=list(GRADES), zero_division=0)
    precision = skm.precision_score(y, pred, average=None, labels=list(GRADES), zero_division=0)
    for g in GRADES:
        expected[f"test/recall_grade{g}"] = recall[g]
        expected[f"test/precision_grade{g}"] = precision[g]
    referable, decided = (y >= 2).astype(int), (pred >= 2).astype(int)
    expected["test/referable_sensitivity"] = skm.recall_score(referable, decided)
    expected["test/referable_specificity"] = skm.recall_score(referable, decided, pos_label=0)
    expected["test/referable_auroc"] = skm.roc_auc_score(referable, p[:, 2:].sum(axis=1))
    fpr, tpr, _ = skm.roc_curve(referable, p[:, 2:].sum(axis=1))
    expected["test/referable_sensitivity_at_spec80"] = tpr[fpr <= 0.2].max()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    assert 0.2 < got["test/accuracy"] < 0.95  # a non-trivial case


# torchmetrics' compute groups share states with the wrapped per-grade metrics, whose own
# update counter stays 0 after a reset: a spurious warning, the values are right (below).
@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric:UserWarning")
def test_per_grade_metrics_stay_right_epoch_after_epoch() -> None:
    """One collection serves every validation epoch: update, compute, reset, again."""
    metrics = grading_metrics("val/")
    for epoch in range(3):
        probs, targets = random_probabilities(100 + 40 * epoch, seed=10 + epoch)
        metrics.update(probs, targets)
        got = {key: float(value) for key, value in metrics.compute().items()}
        metrics.reset()
        y, pred = targets.numpy(), probs.argmax(dim=1).numpy()
        recall = skm.recall_score(y, pred, average=None, labels=list(GRADES), zero_division=0)
        precision = skm.precision_score(y, pred, average=None, labels=list(GRADES), zero_division=0)
        for g in GRADES:
            assert got[f"val/recall_grade{g}"] == pytest.approx(recall[g], abs=1e-5)
            assert got[f"val/precision_grade{g}"] == pytest.approx(precision[g], abs=1e-5)
        assert got["val/macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
        assert got["val/accuracy"] == pytest.approx(skm.accuracy_score(y, pred))


def test_referable_metrics_use_the_grade_two_threshold() -> None:
    # rows: true grade, predicted grade (one-hot probabilities)
    pairs = [(0, 0), (1, 2), (2, 1), (2, 4), (3, 3), (4, 0), (1, 1), (0, 3)]
    targets = torch.tensor([t for t, _ in pairs])
    probs = F.one_hot(torch.tensor([p for _, p in pairs]), 5).float()
    got = computed(probs, targets)
    # referable (true >= 2): rows 2, 3, 4, 5; predicted >= 2 among them: rows 3, 4
    assert got["test/referable_sensitivity"] == pytest.approx(2 / 4)
    # not referable: rows 0, 1, 6, 7; predicted < 2 among them: rows 0, 6
    assert got["test/referable_specificity"] == pytest.approx(2 / 4)
    # the one cut point with any sensitivity has specificity 2/4 < 0.8: none is left
    assert got["test/referable_sensitivity_at_spec80"] == 0.0
    assert got["test/accuracy"] == pytest.approx(3 / 8)  # rows 0, 4, 6


def test_balanced_accuracy_with_a_grade_missing_from_the_targets() -> None:
    probs, targets = random_probabilities(200, 0)
    targets[targets == 3] = 4  # a small test split without grade 3; grade 3 still predicted
    assert (probs.argmax(dim=1) == 3).any()
    got = computed(probs, targets)
    expected = skm.balanced_accuracy_score(targets.numpy(), probs.argmax(dim=1).numpy())
    assert got["test/balanced_accuracy"] == pytest.approx(expected, abs=1e-5)


def test_macro_auroc_with_a_grade_missing_from_the_targets() -> None:
    probs, targets = random_probabilities(200, 0)
    targets[targets == 3] = 4
    got = computed(probs, targets)
    y, p = targets.numpy(), probs.numpy()
    present = [g for g in GRADES if (y == g).any()]
    per_grade = [skm.roc_auc_score(y == g, p[:, g]) for g in present]
    assert got["test/auroc"] == pytest.approx(np.mean(per_grade), abs=1e-5)


# ------------------------------------------------------------------ losses


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_loss_with_gamma_zero_is_cross_entropy(weighted: bool, smoothing: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 5, generator=generator)
    target = torch.randint(0, 5, (16,), generator=generator)
    weight = torch.tensor([0.3, 1.0, 2.0, 4.0, 0.7]) if weighted else None
    focal = FocalLoss(gamma=0.0, weight=weight, label_smoothing=smoothing)(logits, target)
    ce = F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)
    assert focal.item() == pytest.approx(ce.item(), rel=1e-5)
    made = make_loss("focal", None if weight is None else weight.tolist(), smoothing, 0.0)
    assert made(logits, target).item() == pytest.approx(ce.item(), rel=1e-5)


def test_focal_loss_discounts_confident_correct_predictions() -> None:
    target = torch.tensor([0, 1, 2, 3, 4])
    logits = torch.full((5, 5), -2.0)
    logits[torch.arange(5), target] = 3.0  # p_true ~ 0.93
    ce = F.cross_entropy(logits, target)
    focal = FocalLoss(gamma=2.0)(logits, target)
    p_true = logits.softmax(dim=1)[0, 0]
    assert 0 < focal < ce
    assert focal.item() == pytest.approx(((1 - p_true) ** 2 * ce).item(), rel=1e-5)
    # a wrong prediction keeps most of its cross-entropy
    wrong = torch.roll(target, 1)
    assert FocalLoss(2.0)(logits, wrong) > 0.9 * F.cross_entropy(logits, wrong)


def test_focal_loss_gradient_flows() -> None:
    logits = torch.randn(6, 5, requires_grad=True)
    FocalLoss(2.0)(logits, torch.tensor([0, 1, 2, 3, 4, 0])).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_make_loss_builds_the_named_loss() -> None:
    ce = make_loss("ce", [1.0, 2.0, 3.0, 4.0, 5.0], 0.1)
    assert isinstance(ce, torch.nn.CrossEntropyLoss)
    assert ce.weight.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0] and ce.label_smoothing == 0.1
    focal = make_loss("focal", None, 0.0, 1.5)
    assert isinstance(focal, FocalLoss) and focal.gamma == 1.5 and focal.weight is None
    with pytest.raises(ValueError, match=r"loss 'mse': expected one of \('ce', 'focal'\)"):
        make_loss("mse")


# ------------------------------------------------------------------ the model


def seen_size(model: GradeClassifier, images: torch.Tensor) -> tuple[int, ...]:
    """The shape of what the timm network receives."""
    shapes = []
    handle = model.net.register_forward_pre_hook(lambda _, args: shapes.append(args[0].shape))
    with torch.no_grad():
        model(images)
    handle.remove()
    return tuple(shapes[0])


def test_forward_takes_uint8_images_and_gives_grade_logits() -> None:
    model = GradeClassifier(MODEL, image_size=SIZE).eval()
    with torch.no_grad():
        logits = model(images_uint8(3))
    assert logits.shape == (3, 5) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    assert seen_size(model, images_uint8(2)) == (2, 3, SIZE, SIZE)  # no resize by default


def test_input_size_resizes_to_the_requested_size() -> None:
    model = GradeClassifier(MODEL, image_size=SIZE, input_size=48).eval()
    assert model.input_size == 48
    assert seen_size(model, images_uint8(2)) == (2, 3, 48, 48)
    timm_default = GradeClassifier(MODEL, image_size=SIZE, input_size="timm").eval()
    expected = timm.data.resolve_model_data_config(timm_default.net)["input_size"][-1]
    assert timm_default.input_size == expected == 160
    assert seen_size(timm_default, images_uint8(1)) == (1, 3, 160, 160)
    for bad in (0, -8, "large", 1.5):
        with pytest.raises(ValueError, match="input_size: expected null, 'timm' or a positive"):
            GradeClassifier(MODEL, image_size=SIZE, input_size=bad)


def test_images_are_normalised_with_timms_data_config() -> None:
    model = GradeClassifier("test_efficientnet", image_size=SIZE).eval()  # ImageNet mean/std
    config = timm.data.resolve_model_data_config(model.net)
    assert model.mean.flatten().tolist() == pytest.approx(config["mean"])
    assert model.std.flatten().tolist() == pytest.approx(config["std"])
    assert config["mean"] != (0.5, 0.5, 0.5)
    images = images_uint8(2)
    mean = torch.tensor(config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(config["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.net((images.float() / 255 - mean) / std)
        assert torch.allclose(model(images), expected, atol=1e-5)


def test_a_pretrained_path_that_is_not_a_weights_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="is not a file; give a local weights"):
        GradeClassifier(MODEL, image_size=SIZE, pretrained="/nonexistent.pth")
    with pytest.raises(PretrainedWeightsError, match="is not a file"):
        GradeClassifier(MODEL, image_size=SIZE, pretrained=str(tmp_path))  # a folder
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), other)
    with pytest.raises(PretrainedWeightsError, match="does not hold test_resnet weights"):
        GradeClassifier(MODEL, image_size=SIZE, pretrained=str(other))


@pytest.mark.parametrize("pretrained", [True, "hf-hub:timm/test_resnet.r160_in1k"])
def test_hub_weights_offline_name_the_key_and_the_local_file_route(
    pretrained: bool | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub route is timm's own (opt-in); offline (forced here: no network in tests) it
    fails with the config key and the local-file alternative, not a hub traceback."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedWeightsError) as caught:
        GradeClassifier(MODEL, image_size=SIZE, pretrained=pretrained)
    message = str(caught.value)
    assert message.startswith("classifier.model.pretrained: could not get timm's pretrained")
    assert "classifier.model.pretrained=/path/to/weights" in message


def test_pretrained_weights_load_from_a_local_file_with_a_new_head(tmp_path: Path) -> None:
    source = timm.create_model(MODEL, num_classes=10)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = GradeClassifier(MODEL, image_size=SIZE, pretrained=str(path))
    assert torch.equal(model.net.conv1[0].weight, source.conv1[0].weight)
    assert torch.equal(model.net.layer4[0].conv1.weight, source.layer4[0].conv1.weight)
    assert model.net.fc.weight.shape == (5, source.fc.in_features)  # a fresh 5-grade head
    fresh = GradeClassifier(MODEL, image_size=SIZE)
    assert not torch.equal(fresh.net.conv1[0].weight, source.conv1[0].weight)


def test_class_weights_and_focal_loss_reach_the_criterion() -> None:
    weights = [0.5, 1.0, 2.0, 3.0, 4.0]
    model = GradeClassifier(MODEL, image_size=SIZE, loss="focal", class_weights=weights)
    assert isinstance(model.criterion, FocalLoss)
    assert model.criterion.weight.tolist() == weights


# ------------------------------------------------------------------ fit, test, checkpoints


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One epoch of a tiny classifier (from local pretrained weights), then its test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the module fixture runs before the per-test one
    tmp = tmp_path_factory.mktemp("classifier")
    weights = tmp / "pretrained.pth"
    torch.save(timm.create_model(MODEL, num_classes=10).state_dict(), weights)
    L.seed_everything(0, workers=True)
    model = GradeClassifier(
        MODEL, image_size=SIZE, pretrained=str(weights), class_weights=[1, 2, 2, 3, 3]
    )
    logger = CSVLogger(tmp / "logs")
    trainer = quiet_trainer(
        logger=logger, callbacks=[ConfusionMatrixLogger()], default_root_dir=tmp
    )
    trainer.fit(model, loader(24, seed=1, shuffle=True), loader(10, seed=2))
    tested = trainer.test(model, loader(13, seed=3), verbose=False)[0]
    checkpoint = tmp / "classifier.ckpt"
    trainer.save_checkpoint(checkpoint)
    weights.unlink()  # the checkpoint alone must rebuild the model
    torch.set_num_threads(threads)
    return {"model": model, "tested": tested, "logger": logger, "checkpoint": checkpoint}


def test_fit_and_test_log_every_grading_metric(trained) -> None:
    tested = trained["tested"]
    assert KEYS | {"test/loss"} <= set(tested)
    assert all(np.isfinite(v) for v in tested.values())
    # the logged recalls are the confusion matrix's rows (every grade is in the test split)
    matrix = trained["model"].last_confusion["test"].double()
    recall = (matrix.diagonal() / matrix.sum(dim=1)).tolist()
    assert [tested[f"test/recall_grade{g}"] for g in GRADES] == pytest.approx(recall, abs=1e-6)
    assert tested["test/balanced_accuracy"] == pytest.approx(np.mean(recall), abs=1e-6)


def test_confusion_matrix_counts_every_test_image(trained) -> None:
    model = trained["model"]
    matrix = model.last_confusion["test"]
    assert matrix.shape == (5, 5)
    assert int(matrix.sum()) == 13
    assert matrix.sum(dim=1).tolist() == [3, 3, 3, 2, 2]  # rows: true grades of 0..12 % 5
    assert int(model.last_confusion["val"].sum()) == 10
    accuracy = float(matrix.diagonal().sum() / matrix.sum())
    assert accuracy == pytest.approx(trained["tested"]["test/accuracy"], abs=1e-6)


def test_confusion_png_and_csv_are_written_beside_the_csv_log(trained) -> None:
    folder = Path(trained["logger"].log_dir) / "images"
    pngs = sorted(p.name for p in folder.glob("test_confusion_matrix_epoch*.png"))
    assert len(pngs) == 1
    with Image.open(folder / pngs[0]) as image:
        assert image.mode == "RGB" and min(image.size) > 100
    assert list(folder.glob("val_confusion_matrix_epoch000.png"))
    with (folder / "test_confusion_matrix.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == COLUMNS
    table = [[int(c) for c in row[2:]] for row in rows[1:]]
    assert table == trained["model"].last_confusion["test"].int().tolist()
    assert [row[1] for row in rows[1:3]] == ["No DR", "Mild"]
    assert (folder / "val_confusion_matrix.csv").is_file()


def test_load_classifier_rebuilds_the_same_model(trained) -> None:
    model = trained["model"].eval()
    loaded = load_classifier(trained["checkpoint"])
    assert not loaded.training
    assert loaded.hparams.pretrained is None
    assert loaded.criterion.weight.tolist() == [1, 2, 2, 3, 3]
    images = images_uint8(4, seed=9)
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
        assert torch.allclose(loaded.predict_step((images, None), 0).sum(dim=1), torch.ones(4))


def test_read_checkpoint_knows_a_classifier_from_a_vae(trained, tmp_path: Path) -> None:
    path = trained["checkpoint"]
    assert read_checkpoint(path, CHECKPOINT_KIND)["drvae"] == CHECKPOINT_KIND
    with pytest.raises(
        CheckpointError,
        match=r"expected a drvae VAE checkpoint, found a drvae grading classifier",
    ):
        read_checkpoint(path)  # the default kind is a VAE
    fake_vae = tmp_path / "vae.ckpt"
    torch.save({"drvae": vae.CHECKPOINT_KIND, "state_dict": {}}, fake_vae)
    with pytest.raises(CheckpointError, match="expected a drvae grading classifier checkpoint"):
        load_classifier(fake_vae)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(noise, CHECKPOINT_KIND)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_classifier(noise)
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    with pytest.raises(CheckpointError, match="found not a drvae checkpoint"):
        load_classifier(plain)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_classifier(tmp_path / "missing.ckpt")
