"""The paper checks judge accuracy against labels: on data without labels they refuse, in one sentence, before
anything runs (before this, four of six crashed on the labels -1 and two reported NaN)."""

from __future__ import annotations

import pytest
import torch

from pruning_core import Workbench, checks, load_builtin, load_digits
from pruning_core.data import DataSplits, Split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _unlabelled(split: Split) -> Split:
    return Split(split.x, torch.full_like(split.y, -1))


@pytest.mark.parametrize("key", list(checks.CHECKS))
def test_every_check_refuses_data_without_labels(key):
    d = load_digits()
    data = DataSplits(d.name, _unlabelled(d.train), _unlabelled(d.calib), _unlabelled(d.eval), d.num_classes)
    wb = Workbench(load_builtin("digits-cnn"), data, device="cpu")
    passes = wb.eval_passes
    with pytest.raises(checks.NeedsLabels, match="against labels.*top-1 agreement"):
        checks.run_check(key, wb, quick=True)
    assert wb.eval_passes == passes and checks.unavailable(wb)


def test_labelled_data_is_not_refused():
    wb = Workbench(load_builtin("digits-cnn"), load_digits(), device="cpu")
    assert checks.unavailable(wb) is None
