"""Run metadata: the checkpoint hash is taken once at load; provenance() records model, weights, width, input."""

import hashlib
import json

import numpy as np
import torch

import slimkern
from slimkern.provenance import file_sha256, library_versions
from slimkern.zoo.eurosat_vit import WEIGHTS
from tests.helpers import tiny_model


def test_checkpoint_hash_is_the_weights_files_sha256():
    model = slimkern.load("vit_tiny_eurosat", weights=WEIGHTS)
    assert model.checkpoint_sha256 == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() == file_sha256(WEIGHTS)
    assert model.checkpoint_name == WEIGHTS.name
    in_memory = slimkern.load("vit_tiny_eurosat", weights=model.state_dict())
    assert in_memory.checkpoint_sha256 is None and in_memory.checkpoint_name == "state dict (in memory)"


def test_provenance_of_a_prepared_run():
    model = tiny_model("vit_tiny_eurosat", depth=1)
    pixels = np.random.default_rng(0).integers(0, 256, (1, 4, 64, 64)).astype(np.float32)
    p = model.prepare(pixels, bands=["B", "G", "R", "NIR"], units="DN")
    record = model.provenance(width=0.25, mode="attn", prepared=p)
    json.dumps(record)
    assert record["model"] == "vit_tiny_eurosat" and record["width"] == 0.25 and record["mode"] == "attn"
    assert record["checkpoint"] == {"name": "random weights", "sha256": None}
    assert record["input"]["bands"] == ["R", "G", "B"] and record["input"]["given"] == ["R", "G", "B"]
    assert record["input"]["units"] == "DN" and record["input"]["scale"] == 1 / 255
    assert any("NIR" in note for note in record["input"]["notes"])
    assert record["dtype"] == "float32" and record["device"] == "cpu" and record["backend"] == "torch"
    assert record["versions"]["torch"] and record["versions"]["numpy"] == np.__version__
    unprepared = model.provenance()
    assert unprepared["input"]["prepared"] is False and unprepared["input"]["normalization"] == "standardize"
    assert library_versions()["python"] and torch.__version__
