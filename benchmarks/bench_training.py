"""Training throughput (images/s) of a task network: fp32 against bf16-mixed.

CPU (default): the CPU setting of ``experiments/configs`` (model/cpu.yaml, data/cpu.yaml batch
size), Lightning ``precision="32-true"`` against ``"bf16-mixed"``.
GPU (``--gpu``): the paper setting (model/paper.yaml: ResNet-50 at 256², batch 32), fp32 against
bf16-mixed with channels_last memory format.

Batches are made once in memory (``taskonomy.tasks.testing.fake_batch``), so the numbers measure
the network and the optimizer step, not data loading. The two precisions alternate for
``--rounds`` rounds and the median of each is reported, with their ratio (this machine is noisy).

    python benchmarks/bench_training.py [--task normal] [--steps 8] [--rounds 3] [--gpu]

Measured on one H200 (``--gpu --task normal --steps 15 --warmup 5 --rounds 2``): fp32 595 img/s
(cuDNN runs fp32 convolutions in TF32 by default), bf16-mixed + channels_last 721 img/s: 1.21x.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from torch.utils.data import DataLoader, IterableDataset

import taskonomy.experiments as experiments_package
from taskonomy.experiments.train import task_model
from taskonomy.tasks.registry import get_spec
from taskonomy.tasks.testing import fake_batch

CONFIGS = Path(experiments_package.__file__).parent / "configs"


class RepeatedBatches(IterableDataset):
    """The same few batches, ``count`` times (already collated: the loader adds no batch axis)."""

    def __init__(self, batches: list[dict[str, Any]], count: int) -> None:
        self.batches, self.count = batches, count

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i in range(self.count):
            yield self.batches[i % len(self.batches)]


class StepTimer(L.Callback):
    """Wall time of the training steps after ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.end = time.perf_counter()


def _load(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((CONFIGS / name).read_text()))


def measure(task: str, model_options: dict[str, Any], batch_size: int, precision: str,
            steps: int, warmup: int, gpu: bool, channels_last: bool) -> float:
    """Images per second of ``steps`` training steps after ``warmup`` steps."""
    torch.manual_seed(0)
    model = task_model(task, **model_options)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    batches = [fake_batch(get_spec(task), batch_size, model_options["resolution"], seed=s)
               for s in range(2)]
    if channels_last:
        for batch in batches:
            batch[task]["input"] = batch[task]["input"].contiguous(
                memory_format=torch.channels_last)
    loader = DataLoader(RepeatedBatches(batches, warmup + steps), batch_size=None)
    timer = StepTimer(warmup)
    trainer = L.Trainer(accelerator="gpu" if gpu else "cpu", devices=1, precision=precision,
                        max_steps=warmup + steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, train_dataloaders=loader)
    return steps * batch_size / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="normal")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the setting's data batch size")
    parser.add_argument("--gpu", action="store_true", help="paper setting on a CUDA device")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    setting = "paper" if args.gpu else "cpu"
    model_options = _load(f"model/{setting}.yaml")
    model_options.pop("gan", None)
    batch_size = args.batch_size or int(_load(f"data/{setting}.yaml")["batch_size"])
    if args.gpu:
        torch.backends.cudnn.benchmark = True
        variants = {"fp32": ("32-true", False), "bf16-mixed+channels_last": ("bf16-mixed", True)}
    else:
        variants = {"fp32": ("32-true", False), "bf16-mixed": ("bf16-mixed", False)}
    print(f"{setting} setting: task {args.task}, encoder {model_options['encoder']}, "
          f"{model_options['resolution']} px, batch {batch_size}, "
          f"{'CUDA ' + torch.cuda.get_device_name() if args.gpu else 'CPU'}, "
          f"{torch.get_num_threads()} threads")
    results: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(args.rounds):
        for name, (precision, channels_last) in variants.items():
            speed = measure(args.task, model_options, batch_size, precision, args.steps,
                            args.warmup, args.gpu, channels_last)
            results[name].append(speed)
            print(f"  round {round_index + 1} {name:>26}: {speed:8.2f} img/s", flush=True)
    medians = {name: statistics.median(values) for name, values in results.items()}
    base, other = list(medians)
    for name, value in medians.items():
        print(f"{name:>26}: {value:8.2f} img/s (median of {args.rounds})")
    print(f"ratio {other} / {base}: {medians[other] / medians[base]:.2f}x")


if __name__ == "__main__":
    main()
