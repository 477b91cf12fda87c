"""``taskonomy train``: train a task-specific network (LightningCLI).

Example: ``taskonomy train fit --config experiments/configs/cpu.yaml --model.task=normal``.
"""

from __future__ import annotations

from collections.abc import Sequence

COMMAND = ("train",)
HELP = "train a task-specific network: train fit --config CONFIG --model.task=NAME"
PASSTHROUGH = True


def main(argv: Sequence[str]) -> int:
    """Run the training CLI on ``argv`` (``fit --config ... --model.task=...``)."""
    from taskonomy.experiments.train import main as train_main

    return train_main(list(argv))
