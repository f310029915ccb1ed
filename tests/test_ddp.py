"""Multi-process data-parallel training (trainer=ddp: Lightning's ddp_spawn) with 2 CPU
processes over gloo: the rebalanced training split is shared out exactly, and the pipeline
scores every test image exactly once afterwards."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import GRADES, config, quiet_trainer, real_counts, synthetic_set  # tests/ on sys.path

from drvae.data.dataset import FundusDataModule
from drvae.data.rebalance import RebalancePlan
from drvae.pipeline.run import run

pytestmark = pytest.mark.slow


class GradeRecorder(L.LightningModule):
    """Trains a trivial model and writes the grades this process saw to `<out>/rank<r>.json`."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out, self.seen = out, Counter()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        images, grades = batch
        self.seen.update(grades.tolist())
        return self.layer(images.float().mean((1, 2, 3))[:, None]).sum()

    def on_train_end(self) -> None:
        path = Path(self.out) / f"rank{self.global_rank}.json"
        path.write_text(json.dumps(dict(self.seen)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def even_plan(methods: list[str], real: dict[int, int]) -> RebalancePlan:
    """A plan whose training split has an even size: 2 processes then need no padding."""
    added = {1: 3, 3: 6, 4: 1}
    if sum(real.values()) % 2:
        added[4] += 1
    return RebalancePlan.make(methods, added, "added", real)


@pytest.mark.parametrize("method", ["oversample", "synthetic"])
def test_rebalanced_counts_hold_across_two_processes(
    tiny_cache, tiny_splits, tmp_path, method
) -> None:
    plan = even_plan([method], real_counts(tiny_cache, tiny_splits))
    source = synthetic_set(plan) if method == "synthetic" else None
    # batch size 1: no partial batch is dropped, so every image is seen once
    dm = FundusDataModule(
        tiny_cache, tiny_splits, batch_size=1, plan=plan, synthetic=source, seed=3
    )
    trainer = quiet_trainer(devices=2, strategy="ddp_spawn", limit_val_batches=0)
    trainer.fit(GradeRecorder(str(tmp_path)), datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(sum(seen.values()) == sum(plan.total.values()) // 2 for seen in ranks)
    together = Counter()
    for seen in ranks:
        together.update({int(g): n for g, n in seen.items()})
    assert {g: together[g] for g in GRADES} == plan.total


@pytest.mark.parametrize("devices", [2, 1])
def test_pipeline_trains_with_ddp_and_scores_each_test_image_once(
    tmp_path: Path, devices: int
) -> None:
    cfg = config(
        tmp_path / "cache",
        tmp_path / "run",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        f"trainer.devices={devices}",
        "data.num_workers=1",
        "classifier.trainer.max_epochs=2",
    )
    result = run(cfg)
    n_test = sum(result["counts"]["test"].values())
    assert n_test % 2 == 1  # odd: a DistributedSampler would pad the test split
    classifier = result["stages"]["classifier"]
    assert np.sum(classifier["confusion_matrix"]) == n_test
    assert classifier["epochs"] == 2 and result["stages"]["vae"]["epochs"] == 1
    matrix = np.array(classifier["confusion_matrix"], dtype=float)
    recall = np.diag(matrix)[matrix.sum(1) > 0] / matrix.sum(1)[matrix.sum(1) > 0]
    assert result["metrics"]["test/balanced_accuracy"] == pytest.approx(recall.mean(), abs=1e-4)
