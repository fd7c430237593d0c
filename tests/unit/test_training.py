"""The one training loop (``experiments.training``): masked weights stay exactly zero, runs are deterministic and
stop when asked, and the initial weights rewinding goes back to."""

from __future__ import annotations

import pytest
import torch

from pruning_core import load_builtin
from pruning_core.experiments.training import reinitialise, train_masked
from pruning_core.models import ARCHITECTURES
from pruning_core.models.train_demo import demo_initialisation

# ----- masked training ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer,wd", [("adam", 1e-2), ("sgd", 5e-4)])
def test_train_masked_keeps_masked_weights_exactly_zero(optimizer, wd, digits):
    model = demo_initialisation("digits-cnn")
    with torch.no_grad():  # nonzero values under the mask: training must zero them and keep them zero
        for p in model.parameters():
            p.add_(0.01)
    g = torch.Generator().manual_seed(0)
    masks = {k: torch.rand(p.shape, generator=g) < 0.3 for k, p in model.named_parameters() if p.ndim >= 2}
    x, y = digits.train.x[:256], digits.train.y[:256]
    train_masked(model, masks, x, y, epochs=2, lr=0.05 if optimizer == "sgd" else 1e-2, weight_decay=wd,
                 optimizer=optimizer, seed=0)
    assert not model.training
    params = dict(model.named_parameters())
    for k, m in masks.items():
        assert torch.count_nonzero(params[k][~m]) == 0, k
        assert torch.count_nonzero(params[k][m]) == int(m.sum()), k  # the kept ones did train


def test_train_masked_is_deterministic_and_stops_when_asked(digits):
    ref = demo_initialisation("digits-mlp").state_dict()
    again = train_masked(demo_initialisation("digits-mlp"), None, digits.train.x, digits.train.y, epochs=3, seed=7)
    other = train_masked(demo_initialisation("digits-mlp"), None, digits.train.x, digits.train.y, epochs=3, seed=7)
    assert all(torch.equal(again.state_dict()[k], other.state_dict()[k]) for k in ref)  # deterministic
    calls = []

    def stop_after_three() -> bool:
        calls.append(1)
        return len(calls) > 3

    partial = train_masked(demo_initialisation("digits-mlp"), None, digits.train.x, digits.train.y, epochs=5,
                           should_stop=stop_after_three)
    assert len(calls) == 4 and not partial.training


def test_initialisations():
    torch.manual_seed(0)
    ref = ARCHITECTURES["digits-cnn"].build().state_dict()
    before = torch.random.get_rng_state()
    init = demo_initialisation("digits-cnn").state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random state is left alone
    assert all(torch.equal(init[k], ref[k]) for k in ref)
    a = reinitialise(load_builtin("digits-mlp"), seed=3).state_dict()
    b = reinitialise(load_builtin("digits-mlp"), seed=3).state_dict()
    trained = load_builtin("digits-mlp").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc1.weight"], trained["fc1.weight"])
    with pytest.raises(KeyError):
        demo_initialisation("no-such-model")
