"""Train the demo models on the bundled digits and write their weights and model card to assets/.

    python -m pruning_core.models.train_demo            # all demo models
    python -m pruning_core.models.train_demo digits-cnn # one

The demo recipe is ``experiments.training.train_masked`` with its defaults (Adam lr 3e-3, L2 weight decay 1e-4,
cosine schedule, batch 64) from ``demo_initialisation``, 40 epochs, no mask. Deterministic on CPU for a given seed,
torch version and thread count. Writes ``assets/<name>.safetensors``,
``assets/model_cards.json`` (machine-readable: seed, epochs, test accuracy, command) and
``assets/MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from safetensors.torch import save_file
from torch import nn

from ..data import DIGITS_SEED, load_digits
from ..experiments.training import DEMO_BATCH, DEMO_EPOCHS, DEMO_LR, DEMO_WEIGHT_DECAY, seeded, train_masked
from . import ARCHITECTURES, ASSETS, DEMO_MODELS


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


def demo_initialisation(arch_name: str, seed: int = 0) -> nn.Module:
    """The exact initial model of a built-in architecture as ``train`` creates it: ``torch.manual_seed(seed)`` then
    ``ARCHITECTURES[arch_name].build()`` (the demo models use seed 0); the weights lottery-ticket rewinding goes
    back to. The caller's random state is restored. Returns the model on the CPU in eval mode."""
    if arch_name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch_name!r}; available: {', '.join(ARCHITECTURES)}")
    with seeded(seed, torch.device("cpu")):
        model = ARCHITECTURES[arch_name].build()
    return model.eval()


def train(name: str, seed: int = 0, epochs: int = DEMO_EPOCHS) -> tuple[nn.Module, dict]:
    data = load_digits(DIGITS_SEED)
    model = demo_initialisation(name, seed)
    x, y = data.train.x, data.train.y
    start = time.perf_counter()
    train_masked(model, None, x, y, epochs, seed=seed)
    card = {
        "architecture": name,
        "seed": seed,
        "epochs": epochs,
        "optimizer": f"Adam lr={DEMO_LR} weight_decay={DEMO_WEIGHT_DECAY}, cosine schedule, batch {DEMO_BATCH}",
        "data": f"sklearn digits, 70/30 stratified split, seed {DIGITS_SEED}",
        "train_accuracy": round(accuracy(model, x, y), 4),
        "test_accuracy": round(accuracy(model, data.eval.x, data.eval.y), 4),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(time.perf_counter() - start, 1),
        "torch": torch.__version__,
        "command": f"python -m pruning_core.models.train_demo {name}",
    }
    return model, card


def write_card_markdown(cards: dict) -> None:
    lines = ["# Demo model card", "",
             "Models trained by this project on scikit-learn's bundled 8x8 digits (no download). "
             "Inputs are (N, 1, 8, 8) floats in [0, 1] (pixel / 16); labels 0-9. Test accuracy is on the "
             "30% stratified hold-out split (540 images).", "",
             "| model | parameters | test accuracy | train accuracy | seed | epochs | command |",
             "|---|---|---|---|---|---|---|"]
    for name, c in cards.items():
        lines.append(f"| {name} | {c['parameters']:,} | {c['test_accuracy']:.2%} | {c['train_accuracy']:.2%} "
                     f"| {c['seed']} | {c['epochs']} | `{c['command']}` |")
    lines += ["", f"Optimiser: {next(iter(cards.values()))['optimizer']}. Trained with torch "
              f"{next(iter(cards.values()))['torch']} on CPU.", ""]
    (ASSETS / "MODEL_CARD.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"demo models to train (default: all of {DEMO_MODELS})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cards_path = ASSETS / "model_cards.json"
    cards = json.loads(cards_path.read_text()) if cards_path.exists() else {}
    for name in args.names or DEMO_MODELS:
        if name not in DEMO_MODELS:
            parser.error(f"unknown demo model {name!r}; choose from {DEMO_MODELS}")
        model, card = train(name, args.seed)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(ASSETS / ARCHITECTURES[name].weights))
        cards[name] = card
        print(json.dumps(card))
    cards = {k: cards[k] for k in DEMO_MODELS if k in cards}
    cards_path.write_text(json.dumps(cards, indent=2) + "\n")
    write_card_markdown(cards)


if __name__ == "__main__":
    main()
