"""The authors' released PyTorch weights (visualpriors) loaded and registered as task runs."""

import json
from pathlib import Path

import pytest
import torch

from taskonomy.analysis.records import read_record, record_path
from taskonomy.experiments.cli import main as cli
from taskonomy.tasks.build import build_task
from taskonomy.tasks.pretrained import (
    import_visualpriors,
    load_decoder,
    load_encoder,
    read_state_dict,
    released_file_task,
    released_pairs,
)
from taskonomy.tasks.source_runs import find_task_runs, load_source, register_task_run
from taskonomy.tasks.testing import seeded_state_dict
from taskonomy.tasks.transfer import TransferTask

#: The authors' port run on seeded weights (tests/data/make_visualpriors_reference.py).
REFERENCE = json.loads(
    (Path(__file__).parent / "data" / "visualpriors_reference.json").read_text()
)


def _case(name: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    case = REFERENCE[name]
    state = seeded_state_dict([(k, s) for k, s in case["shapes"]], case["seed"])
    x = torch.randn(case["input_shape"], generator=torch.Generator().manual_seed(case["seed"] + 1),
                    dtype=torch.float64)
    expected = torch.tensor(case["output"], dtype=torch.float64).reshape(case["output_shape"])
    return state, x, expected


@pytest.mark.parametrize(("case", "task", "encoder", "resolution", "load", "part"), [
    ("encoder", "normal", "resnet50", 64, load_encoder, "encoder"),  # the representation
    ("dense_decoder", "normal", "resnet10_tiny", 16, load_decoder, "head"),  # the prediction
    # the FC head reads the representation in TensorFlow's H×W×C order
    ("mlp_decoder", "class_scene", "resnet10_tiny", 256, load_decoder, "head"),
])
def test_released_weights_give_the_authors_outputs(case, task, encoder, resolution, load,
                                                   part) -> None:
    state, x, expected = _case(case)
    module = build_task(task, encoder=encoder, resolution=resolution).double().eval()
    load(module, state, f"reference {case}")
    with torch.no_grad():
        assert torch.allclose(getattr(module, part)(x), expected, rtol=1e-9, atol=1e-9)


def test_released_file_names_give_task_and_part(tmp_path: Path) -> None:
    assert released_file_task("normal_encoder-f5e2c7737e49.pth") == ("normal", "encoder")
    assert released_file_task("/x/curvature_decoder-b93aed18.pth") == ("principal_curvature",
                                                                       "decoder")
    assert released_file_task("segment_unsup25d_encoder.pth") == ("segment_unsup25d", "encoder")
    assert released_file_task("weights.pth") is None
    for name in ("weights.pth", "normal_decoder-1.pth"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError, match="not named like a released file"):
        released_pairs([tmp_path / "weights.pth"])
    with pytest.raises(ValueError, match="without its encoder"):
        released_pairs([tmp_path / "normal_decoder-1.pth"])
    # A shell pattern that matched nothing reaches the command as it is.
    with pytest.raises(ValueError, match="no weights file .*normal_encoder-\\*.pth: download"):
        released_pairs([tmp_path / "normal_encoder-*.pth"])


def _save(path: Path, case: str, **renames: str) -> Path:
    state, _, _ = _case(case)
    torch.save({"state_dict": {renames.get(k, k): v.float() for k, v in state.items()}}, path)
    return path


def test_imported_runs_are_sources_and_need_their_decoder_to_be_self(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    normal = _save(tmp_path / "normal_encoder-aa11.pth", "encoder")
    decoder = _save(tmp_path / "normal_decoder-bb22.pth", "dense_decoder")
    depth = _save(tmp_path / "depth_zbuffer_encoder-cc33.pth", "encoder")
    assert cli(["weights", "import", str(normal), str(decoder), str(depth),
                "--runs_dir", str(runs)]) == 0
    found = find_task_runs(runs, ["normal", "depth_zbuffer"], resolution=256, encoder="resnet50")
    assert found["normal"].run_id == "normal-visualpriors"
    imported = found["normal"].config["imported"]
    assert imported["format"] == "visualpriors" and imported["decoder"] == decoder.name
    assert found["depth_zbuffer"].config["imported"]["decoder"] is None
    assert found["depth_zbuffer"].config["model"]["encoder"] == "resnet50"

    # The frozen source a transfer reads holds the released weights.
    source = load_source(found["depth_zbuffer"], runs, resolution=256)
    reference = build_task("depth_zbuffer", encoder="resnet50", resolution=256).eval()
    load_encoder(reference, read_state_dict(depth), "reference")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(source.encoder(x), reference.encoder(x))

    with pytest.raises(ValueError, match="imported without its decoder"):
        TransferTask(target="depth_zbuffer", kind="self", task_runs=str(runs), resolution=256)
    assert read_record(record_path(runs, "normal-visualpriors")).status == "finished"


def test_mismatched_or_foreign_files_are_refused(tmp_path: Path) -> None:
    encoder = _save(tmp_path / "normal_encoder-aa11.pth", "encoder")
    decoder = _save(tmp_path / "normal_decoder-bb22.pth", "dense_decoder")
    with pytest.raises(ValueError, match="released encoder of 'normal', not the encoder of "
                                         "'reshading'"):
        import_visualpriors(tmp_path, encoder, task="reshading")
    with pytest.raises(ValueError, match="released decoder of 'normal', not the encoder"):
        import_visualpriors(tmp_path, decoder, task="normal")
    unnamed_decoder = _save(tmp_path / "weights_d.pth", "dense_decoder")
    with pytest.raises(ValueError, match="not of the authors' network"):
        import_visualpriors(tmp_path, unnamed_decoder, task="normal")  # a decoder as encoder
    unnamed = _save(tmp_path / "weights.pth", "encoder")
    with pytest.raises(ValueError, match="no decoder of 'room_layout'"):
        import_visualpriors(tmp_path, unnamed, unnamed_decoder, task="room_layout")
    with pytest.raises(ValueError, match="colorization's encoder reads the L channel alone"):
        import_visualpriors(tmp_path, unnamed, task="colorization")
    with pytest.raises(ValueError, match="cannot tell the task"):
        import_visualpriors(tmp_path, unnamed)
    (tmp_path / "junk.pth").write_bytes(b"<html><body>404 Not Found</body></html>")
    with pytest.raises(ValueError, match=r"not a PyTorch weights file \(it begins b'<html>"):
        read_state_dict(tmp_path / "junk.pth")
    cut = tmp_path / "cut.pth"
    torch.save({"state_dict": {"w": torch.ones(3)}}, cut)
    cut.write_bytes(cut.read_bytes()[:100])
    with pytest.raises(ValueError, match="cannot read .*; download it again"):
        read_state_dict(cut)
    objects = tmp_path / "objects.pth"
    torch.save({"state_dict": {"w": torch.ones(3)}, "opt": Path("x")}, objects)
    with pytest.raises(ValueError, match="Python objects besides tensors") as caught:
        read_state_dict(objects)
    assert "weights_only=False" not in str(caught.value)


def test_a_bad_run_id_or_task_name_writes_nothing(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    encoder = _save(tmp_path / "normal_encoder-aa11.pth", "encoder")
    runs = tmp_path / "runs"
    for bad in ("normal/v2", "../x"):
        assert cli(["weights", "import", str(encoder), "--runs_dir", str(runs),
                    "--run_id", bad]) == 2
        assert "run_id must be" in capsys.readouterr().err
    assert not runs.exists() and not (tmp_path / "x").exists()
    typo = _save(tmp_path / "nromal_encoder-dd44.pth", "encoder")
    assert cli(["weights", "import", str(encoder), str(typo), "--runs_dir", str(runs)]) == 2
    assert "nromal" in capsys.readouterr().err and not runs.exists()
    cut = tmp_path / "reshading_encoder-cc33.pth"
    cut.write_bytes(encoder.read_bytes()[:100])
    assert cli(["weights", "import", str(encoder), str(cut), "--runs_dir", str(runs)]) == 2
    assert "imported already: normal" in " ".join(capsys.readouterr().err.split())


def test_an_import_never_replaces_a_trained_run_but_may_replace_an_import(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    trained = build_task("normal", encoder="resnet50", resolution=256)
    register_task_run(trained, runs, run_id="normal-trained")
    encoder = _save(tmp_path / "normal_encoder-aa11.pth", "encoder")
    with pytest.raises(ValueError, match="not imported .*choose another --run_id"):
        import_visualpriors(runs, encoder, run_id="normal-trained")
    first = import_visualpriors(runs, encoder)
    again = import_visualpriors(runs, encoder)  # the same import, refreshed
    assert first.run_id == again.run_id == "normal-visualpriors"


def test_transfers_into_an_imported_class_weighted_target_warn_or_use_its_weights(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    encoder = _save(tmp_path / "segment_semantic_encoder-dd44.pth", "encoder")
    import_visualpriors(runs, encoder)
    options = {"target": "segment_semantic", "kind": "pixels", "task_runs": str(runs),
               "resolution": 256, "encoder": "resnet50"}
    with pytest.warns(UserWarning, match="imported without class weights"):
        TransferTask(**options)
    weights = tmp_path / "prior.txt"
    weights.write_text(" ".join(["0.5"] + ["8"] * 16))
    import_visualpriors(runs, encoder, class_weights=weights)
    model = TransferTask(**options)
    assert model.hparams["target_options"]["class_weights"] == [0.5] + [8.0] * 16


def test_a_self_baseline_of_a_task_without_a_released_decoder_says_to_train_it(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    import_visualpriors(runs, _save(tmp_path / "room_layout_encoder-ee55.pth", "encoder"))
    with pytest.raises(ValueError, match="released no decoder of it: train the task"):
        TransferTask(target="room_layout", kind="self", task_runs=str(runs), resolution=256)


def test_a_classification_decoder_of_another_input_size_is_refused(tmp_path: Path) -> None:
    state, _, _ = _case("mlp_decoder")
    state["fc0.weight"] = state["fc0.weight"][:, :1024]
    module = build_task("class_scene", encoder="resnet10_tiny", resolution=256)
    with pytest.raises(ValueError, match="first FC layer has shape"):
        load_decoder(module, state, "cut decoder")


def test_a_resumed_random_baseline_notices_other_random_weights() -> None:
    from taskonomy.tasks.transfer import _other_weights

    run = "random-resnet50-seed0"
    new = {"run_id": run, "fingerprint": "random|resnet50|3|0|weights:aaaa"}
    assert not _other_weights(new, dict(new))
    assert _other_weights(new, {"run_id": run, "fingerprint": "random|resnet50|3|0|weights:bbbb"})
    assert _other_weights({"run_id": run, "fingerprint": "random|resnet50|3|0"}, new)  # former
