"""Train the demo models on the bundled digits and write their weights and model card to assets/.

    python -m pruning_core.models.train_demo            # all demo models
    python -m pruning_core.models.train_demo digits-cnn # one

Deterministic on CPU for a given seed and torch version. Writes ``assets/<name>.safetensors``,
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
from . import ARCHITECTURES, ASSETS, DEMO_MODELS

EPOCHS = 40
BATCH = 64
LR = 3e-3
WEIGHT_DECAY = 1e-4


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


def train(name: str, seed: int = 0, epochs: int = EPOCHS) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    data = load_digits(DIGITS_SEED)
    model = ARCHITECTURES[name].build()
    opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    g = torch.Generator().manual_seed(seed)
    x, y = data.train.x, data.train.y
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=g).split(BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
    card = {
        "architecture": name,
        "seed": seed,
        "epochs": epochs,
        "optimizer": f"Adam lr={LR} weight_decay={WEIGHT_DECAY}, cosine schedule, batch {BATCH}",
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
