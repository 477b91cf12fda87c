"""Write ``visualpriors_reference.json``: the authors' PyTorch port run on seeded weights.

The reference for ``tests/test_pretrained.py``: parameter names and shapes of the authors'
encoder and decoders as the ``visualpriors`` package builds them, and their outputs (float64,
eval mode) for seeded weights (:func:`taskonomy.tasks.testing.seeded_state_dict`) and seeded
inputs. Regenerate with the package installed beside the suite (it needs only torch)::

    .venv/bin/pip install --no-deps visualpriors==0.3.5
    .venv/bin/python tests/data/make_visualpriors_reference.py
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import torch
from visualpriors.taskonomy_network import TaskonomyDecoder, TaskonomyEncoder

from taskonomy.tasks.testing import seeded_state_dict

OUT = Path(__file__).with_name("visualpriors_reference.json")


def _case(network: torch.nn.Module, seed: int, input_shape: list[int]) -> dict:
    shapes = [(k, list(v.shape)) for k, v in network.state_dict().items()]
    network = network.double().eval()
    network.load_state_dict(seeded_state_dict(shapes, seed))
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(seed + 1),
                    dtype=torch.float64)
    with torch.no_grad():
        y = network(x)
    return {"shapes": shapes, "seed": seed, "input_shape": input_shape,
            "output_shape": list(y.shape), "output": y.flatten().tolist()}


def _version() -> str:
    try:
        return metadata.version("visualpriors")
    except metadata.PackageNotFoundError:  # imported from an unpacked source tree
        return "(source tree)"


def main() -> None:
    """Run the three networks and write the JSON file."""
    encoder = TaskonomyEncoder(normalize_outputs=False, eval_only=True)
    reference = {
        "package": f"visualpriors {_version()}",
        "encoder": _case(encoder, 1, [1, 3, 64, 64]),
        "dense_decoder": _case(TaskonomyDecoder(out_channels=3, eval_only=True), 3,
                               [1, 8, 1, 1]),
        "mlp_decoder": _case(TaskonomyDecoder(out_channels=63, is_decoder_mlp=True,
                                              eval_only=True), 5, [2, 8, 16, 16]),
    }
    OUT.write_text(json.dumps(reference, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
