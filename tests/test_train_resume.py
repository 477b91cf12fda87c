"""Killing a training run and repeating its command resumes from ``last.ckpt``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import torch
import yaml

from taskonomy.analysis.records import read_record, record_path

STEP_LOGGER = '''
from pathlib import Path
import lightning as L


class StepLog(L.Callback):
    """Appends the global step at the start of every training batch to a file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with self.path.open("a") as handle:
            handle.write(f"{trainer.global_step}\\n")
'''


def _config(tmp_path: Path, root: Path) -> Path:
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "precision": "bf16-mixed",
                    "max_steps": 6, "max_epochs": -1, "num_sanity_val_steps": 0,
                    "limit_val_batches": 1, "limit_test_batches": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, "logger": False},
        "model": {"encoder": "resnet10_tiny", "resolution": 32, "decoder_width": 0.125,
                  "lr_milestone": None},
        "data": {"root": str(root), "batch_size": 4, "num_workers": 0, "epoch_size": 8,
                 "shuffle_buffer": 8},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _steps(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path, tiny_shards: Path) -> None:
    (tmp_path / "steplog.py").write_text(STEP_LOGGER)
    first_log, second_log = tmp_path / "first.txt", tmp_path / "second.txt"
    runs = tmp_path / "runs"
    # One thread: on a shared 2-core machine OpenMP spin-waits make 2 threads far slower.
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def command(log: Path) -> list[str]:
        return [sys.executable, "-m", "taskonomy.experiments.cli", "train", "fit",
                "--config", str(_config(tmp_path, tiny_shards)), "--model.task=normal",
                f"--runs_dir={runs}", "--run_id=resumable",
                "--trainer.callbacks+=steplog.StepLog", f"--trainer.callbacks.path={log}"]

    last = runs / "resumable" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(command(first_log), env=env, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not (last.is_file() and zipfile.is_zipfile(last)):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved_step = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 2 <= saved_step < 6
    assert read_record(record_path(runs, "resumable")).status == "running"

    done = subprocess.run(command(second_log), env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Restoring states from the checkpoint path at {last}" in done.stdout + done.stderr
    steps = _steps(second_log)
    # The resumed process continues at the saved step and stops at max_steps.
    assert steps[0] == saved_step and steps[-1] == 5 and steps == sorted(steps)
    assert _steps(first_log)[0] == 0
    record = read_record(record_path(runs, "resumable"))
    assert record.status == "finished" and record.config["ckpt_path"] == str(last)
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 6


def test_a_run_stopped_by_sigterm_fails_with_status_143(tmp_path: Path,
                                                        tiny_shards: Path) -> None:
    # Lightning turns SIGTERM (a scheduler, a W&B stop) into a SystemExit without a status;
    # `train … && next` must not take the stopped run for a success.
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    last = runs / "stopped" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskonomy.experiments.cli", "train", "fit",
         "--config", str(_config(tmp_path, tiny_shards)), "--model.task=normal",
         "--trainer.max_steps=100000", f"--runs_dir={runs}", "--run_id=stopped"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (last.is_file() and zipfile.is_zipfile(last)):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, output[-3000:]
    assert "the run was stopped (SIGTERM)" in output
    assert read_record(record_path(runs, "stopped")).status == "failed"
