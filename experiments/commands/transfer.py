"""``taskonomy transfer``: train a transfer or a baseline into a target (LightningCLI).

Example: ``taskonomy transfer fit --config experiments/configs/transfer_cpu.yaml
--model.target=normal --model.sources=[reshading]``.
"""

from __future__ import annotations

from collections.abc import Sequence

COMMAND = ("transfer",)
HELP = ("train a transfer or baseline: transfer fit --config CONFIG --model.target=T "
        "--model.sources=[S,...] | --model.kind=pixels|random|self")
PASSTHROUGH = True


def main(argv: Sequence[str]) -> int:
    """Run the transfer CLI on ``argv`` (``fit --config ... --model.target=...``)."""
    from taskonomy.experiments.transfer import main as transfer_main

    return transfer_main(list(argv))
