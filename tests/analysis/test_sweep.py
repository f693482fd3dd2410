"""The sweep end to end on a few real EuroSAT images: result files, resume after interruption, CLI."""

import csv
import json

import numpy as np
import pytest

import slimkern.analysis.sweep as sweep_module
from slimkern.analysis.datasets import class_folder_dataset
from slimkern.analysis.results import read_scores
from slimkern.analysis.sweep import run_sweep
from slimkern.cli import main
from tests.analysis.test_datasets import EUROSAT_MODEL, _tree
from tests.analysis.test_features import _count_stem_calls
from tests.helpers import tiny_model

WIDTHS = (0.5, 0.01)  # 1.0 is added
SEEDS = 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return class_folder_dataset(_tree(tmp_path_factory.mktemp("data"), per_class=6), name="toy")  # 12 images


@pytest.fixture(scope="module")
def model():
    return tiny_model("vit_tiny_eurosat", **EUROSAT_MODEL)


def _rows(path):
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def test_result_files_in_the_papers_layout(tmp_path, data, model):
    summary = run_sweep(model, data, tmp_path, widths=WIDTHS, probes=("knn", "linear"), seeds=SEEDS,
                        batch_size=5, progress=False)
    for probe in ("knn", "linear"):
        rows = _rows(tmp_path / f"{probe}_scores_2way_toy.csv")
        assert rows[0] == ["scale", "metric", "seed"]
        assert [(float(r[0]), int(r[2])) for r in rows[1:]] == [(w, s) for w in (0.01, 0.5, 1.0) for s in range(2)]
        assert all(0.0 <= float(r[1]) <= 1.0 for r in rows[1:])
    flops = _rows(tmp_path / "model_flops.csv")
    assert flops[0] == ["model", "scale", "flops_SASF", "flops_SA", "flops_SF"]
    modes = ("attn+ffn", "attn", "ffn")
    assert flops[1] == ["vit_tiny_eurosat", "0.01", *(str(model.flops(0.01, mode=m)) for m in modes)]
    assert len(flops) == 4 and int(flops[3][2]) == model.flops(1.0)

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["probes"] == json.loads(json.dumps(summary["probes"]))
    knn = {row["width"]: row for row in summary["probes"]["knn"]}
    scores = read_scores(tmp_path / "knn_scores_2way_toy.csv")
    assert knn[1.0]["retention_mean"] == 1.0 and knn[1.0]["relative_flops"] == 1.0
    for width in (0.5, 0.01):
        per_seed = np.array([scores[width][s] / scores[1.0][s] for s in range(SEEDS)])
        assert knn[width]["retention_mean"] == pytest.approx(per_seed.mean())
        assert knn[width]["metric_mean"] == pytest.approx(np.mean(list(scores[width].values())))
        assert knn[width]["relative_flops"] == pytest.approx(model.relative_flops(width))
    assert [r["width"] for r in summary["redundancy"]] == [0.01, 0.5, 1.0]
    assert summary["metric"] == "macro_accuracy" and summary["num_images"] == 12
    provenance = on_disk["provenance"]  # how the features were made, also next to them
    next_to_features = json.loads((tmp_path / "features" / "provenance.json").read_text())
    assert next_to_features.pop("widths") == [0.01, 0.5, 1.0] and next_to_features == provenance
    assert provenance["input"]["band_names"] == ["R", "G", "B"] and provenance["input"]["units"] == "DN"
    assert provenance["checkpoint"]["name"] == "random weights" and provenance["versions"]["torch"]
    for stem in ("knn_vs_compute", "linear_vs_compute", "redundancy_vs_compute"):
        for suffix in (".png", ".svg"):
            assert (tmp_path / f"{stem}{suffix}").stat().st_size > 1000


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path, data, model, monkeypatch):
    calls = _count_stem_calls(model)
    fits = []
    real_metric = sweep_module.probe_metric

    def interrupted_after_three(*args, **kwargs):
        if len(fits) == 3:
            raise KeyboardInterrupt
        fits.append(args[0])
        return real_metric(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "probe_metric", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(model, data, tmp_path, widths=WIDTHS, seeds=SEEDS, batch_size=5, plot=False, progress=False)
    assert calls[0] == 3  # 12 images in batches of 5
    done = json.loads((tmp_path / "progress.json").read_text())["scores"]["knn"]
    assert sum(len(seeds) for seeds in done.values()) == 3

    fits.clear()
    monkeypatch.setattr(sweep_module, "probe_metric", lambda *a, **k: (fits.append(a[0]), real_metric(*a, **k))[1])
    resumed = run_sweep(model, data, tmp_path, widths=WIDTHS, seeds=SEEDS, batch_size=5, plot=False,
                        progress=False)
    assert calls[0] == 3 and len(fits) == 3 * SEEDS - 3  # no feature recomputed, only the missing fits

    fresh = run_sweep(model, data, tmp_path / "fresh", widths=WIDTHS, seeds=SEEDS, batch_size=5, plot=False,
                      progress=False)
    assert resumed["probes"] == fresh["probes"] and resumed["redundancy"] == fresh["redundancy"]


def test_a_folder_of_another_sweep_is_refused(tmp_path, data, model):
    run_sweep(model, data, tmp_path, widths=WIDTHS, seeds=1, plot=False, progress=False)
    with pytest.raises(ValueError, match=r"holds a different sweep \(differs in: mode\)"):
        run_sweep(model, data, tmp_path, widths=WIDTHS, mode="ffn", seeds=1, plot=False, progress=False)


def test_a_sweep_interrupted_during_features_is_bound_to_its_inputs(tmp_path, data, model, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "run_widths", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(model, data, tmp_path, widths=WIDTHS, seeds=1, plot=False, progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"differs in: widths"):
        run_sweep(model, data, tmp_path, widths=(0.25,), seeds=1, plot=False, progress=False)


def test_cli_reports_bad_data_and_plots_folders(tmp_path, data, model, capsys):
    (tmp_path / "data" / "Forest").mkdir(parents=True)
    assert main(["sweep", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 2
    assert "has no images" in capsys.readouterr().err

    for i in (1, 2):
        run_sweep(model, data, tmp_path / f"run{i}", widths=WIDTHS, seeds=1, plot=False, progress=False)
    assert main(["plot", str(tmp_path / "run1"), str(tmp_path / "run2")]) == 2
    assert "several folders need --out" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "run1"), str(tmp_path / "run2"), "--out", str(tmp_path / "both")]) == 0
    assert (tmp_path / "both" / "knn_vs_compute.svg").is_file()
    runs = [str(tmp_path / "run1"), str(tmp_path / "run2")]
    assert main(["plot", *runs, "--out", str(tmp_path / "named"), "--names", "original"]) == 2
    assert "1 legend names for 2 folders" in capsys.readouterr().err
    assert main(["plot", *runs, "--out", str(tmp_path / "named"), "--names", "original,trained"]) == 0
    assert (tmp_path / "named" / "knn_vs_compute.png").is_file()


def test_more_seeds_and_probes_are_added_to_a_finished_sweep(tmp_path, data, model, monkeypatch):
    run_sweep(model, data, tmp_path, widths=WIDTHS, probes=("knn",), seeds=1, plot=False, progress=False)
    calls, fits = _count_stem_calls(model), []
    real_metric = sweep_module.probe_metric
    monkeypatch.setattr(sweep_module, "probe_metric", lambda *a, **k: (fits.append(a[0]), real_metric(*a, **k))[1])
    more = run_sweep(model, data, tmp_path, widths=WIDTHS, probes=("knn", "linear"), seeds=2, plot=False,
                     progress=False)
    # no feature recomputed; only knn seed 1 and linear seeds 0, 1 at the 3 widths are new fits
    assert calls[0] == 0 and sorted(fits) == ["knn"] * 3 + ["linear"] * 6
    fresh = run_sweep(model, data, tmp_path / "fresh", widths=WIDTHS, probes=("knn", "linear"), seeds=2,
                      plot=False, progress=False)
    assert more["probes"] == fresh["probes"] and more["seeds"] == [0, 1]
    assert read_scores(tmp_path / "linear_scores_2way_toy.csv") == read_scores(
        tmp_path / "fresh" / "linear_scores_2way_toy.csv")


def test_a_folder_of_the_same_images_with_other_labels_is_refused(tmp_path, data, model):
    import dataclasses

    run_sweep(model, data, tmp_path, widths=WIDTHS, seeds=1, plot=False, progress=False)
    # e.g. an edited multi-label list: same image files, other labels -> the finished scores are stale
    relabelled = dataclasses.replace(data, labels=data.labels[::-1].copy())
    with pytest.raises(ValueError, match=r"holds a different sweep \(differs in: labels_sha256\)"):
        run_sweep(model, relabelled, tmp_path, widths=WIDTHS, seeds=1, plot=False, progress=False)
