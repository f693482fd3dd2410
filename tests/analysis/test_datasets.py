"""Readers: class folders (JPEG, GeoTIFF), multi-label lists, band and scale handling, clear errors."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from slimkern.analysis.command import DEMO_DATA
from slimkern.analysis.datasets import (
    DataError,
    class_folder_dataset,
    model_batches,
    multilabel_dataset,
    read_image,
)
from tests.helpers import tiny_model

BIGEARTHNET = Path(__file__).parents[1] / "data" / "bigearthnet_s2"  # one real band, shipped with the tests
EUROSAT_MODEL = {"depth": 1, "dim": 32, "num_heads": 2}


@pytest.fixture(scope="module")
def rgb_model():
    return tiny_model("vit_tiny_eurosat", **EUROSAT_MODEL)


def _tree(tmp_path: Path, per_class: int = 2, classes=("Forest", "River")) -> Path:
    for cls in classes:
        (tmp_path / cls).mkdir(parents=True)
        for f in sorted((DEMO_DATA / cls).glob("*.jpg"))[:per_class]:
            shutil.copyfile(f, tmp_path / cls / f.name)
    return tmp_path


def test_shipped_sweep_sample_is_balanced_real_eurosat():
    data = class_folder_dataset(DEMO_DATA)
    assert len(data) == 500 and len(data.classes) == 10 and not data.multilabel
    assert np.bincount(data.labels).tolist() == [50] * 10
    image = data.read(0)
    assert image.shape == (3, 64, 64) and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 255


def test_batches_are_the_models_normalised_input(tmp_path, rgb_model):
    data = class_folder_dataset(_tree(tmp_path))
    batch = next(model_batches(data, rgb_model, batch_size=3)).x
    assert data.bands == ("R", "G", "B")
    pixels = np.asarray(Image.open(data.items[1]).convert("RGB")).transpose(2, 0, 1) / 255.0
    expected = rgb_model.normalize(torch.from_numpy(pixels).float()[None])
    assert batch.shape == (3, 3, 64, 64)
    torch.testing.assert_close(batch[1:2], expected)


def test_images_are_resized_to_the_model_input(tmp_path):
    model = tiny_model("vit_tiny_eurosat", img_size=96, **EUROSAT_MODEL)
    batch = next(model_batches(class_folder_dataset(_tree(tmp_path)), model, batch_size=4)).x
    assert batch.shape == (4, 3, 96, 96)


def test_empty_class_folder_is_named(tmp_path):
    root = _tree(tmp_path)
    (root / "Highway").mkdir()
    with pytest.raises(DataError, match=r"class folder .*Highway has no images"):
        class_folder_dataset(root)


def test_no_class_folders(tmp_path):
    with pytest.raises(DataError, match="no class folders"):
        class_folder_dataset(tmp_path)
    with pytest.raises(DataError, match="not found"):
        class_folder_dataset(tmp_path / "missing")


def test_unreadable_file_is_named(tmp_path, rgb_model):
    root = _tree(tmp_path)
    (root / "River" / "broken.jpg").write_bytes(b"this is not a JPEG")
    data = class_folder_dataset(root)
    with pytest.raises(DataError, match=r"cannot read image .*broken\.jpg"):
        list(model_batches(data, rgb_model, batch_size=8))


def test_geotiff_band_mismatch_and_band_selection(tmp_path, rgb_model):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            tifffile.imwrite(tmp_path / cls / f"{i}.tif", rng.integers(0, 255, (64, 64, 13), dtype=np.uint16))
    data = class_folder_dataset(tmp_path)
    with pytest.raises(DataError, match=r"13 bands, but vit_tiny_eurosat expects 3 in this order: R, G, B"):
        next(model_batches(data, rgb_model, batch_size=4))
    batch = next(model_batches(data, rgb_model, batch_size=4, bands=[3, 2, 1])).x
    stored = tifffile.imread(tmp_path / "a" / "0.tif").astype(np.float32)[..., [3, 2, 1]].transpose(2, 0, 1)
    torch.testing.assert_close(batch[0:1], rgb_model.normalize(torch.from_numpy(stored / 255.0)[None]))
    with pytest.raises(DataError, match="cannot select band indices"):
        next(model_batches(data, rgb_model, batch_size=4, bands=[13, 2, 1]))
    # named bands: the model's are picked by name, in its order, whatever the file's order
    names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    torch.testing.assert_close(next(model_batches(data, rgb_model, batch_size=4, band_names=names)).x, batch)
    with pytest.raises(DataError, match=r"13 bands, but 3 band names were given \(B04, B03, B02\)"):
        next(model_batches(data, rgb_model, batch_size=4, band_names=["B04", "B03", "B02"]))


def test_units_of_the_stored_values(tmp_path, rgb_model):
    (tmp_path / "a").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a" / "0.tif", pixels.astype(np.float32) / 255,  # stored as 0-1 floats
                     photometric="minisblack", planarconfig="contig")
    data = class_folder_dataset(tmp_path)
    batch = next(model_batches(data, rgb_model, 1, band_names=["R", "G", "B"], units="reflectance")).x
    want = rgb_model.normalize(torch.from_numpy(pixels.transpose(2, 0, 1).astype(np.float32) / 255)[None])
    torch.testing.assert_close(batch, want)


def test_geotiff_band_first_layout_reads_the_same(tmp_path):
    band_last = np.arange(3 * 5 * 2, dtype=np.uint16).reshape(3, 5, 2)  # [H=3, W=5, C=2]
    tifffile.imwrite(tmp_path / "last.tif", band_last, photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(tmp_path / "first.tif", band_last.transpose(2, 0, 1), photometric="minisblack")
    expected = band_last.transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(read_image(tmp_path / "last.tif"), expected)
    np.testing.assert_array_equal(read_image(tmp_path / "first.tif"), expected)


def test_real_bigearthnet_band_reads_as_one_band():
    path = next(BIGEARTHNET.glob("*/*_B04.tif"))
    image = read_image(path)
    assert image.shape == (1, 120, 120) and image.max() > 100  # uint16 reflectance x 10000


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_multilabel_lists(tmp_path, kind):
    root = _tree(tmp_path, per_class=1)
    files = [f"{cls}/{next((root / cls).glob('*.jpg')).name}" for cls in ("Forest", "River")]
    table = {files[0]: ["forest", "water"], files[1]: ["water"]}
    if kind == "json":
        import json

        labels = tmp_path / "labels.json"
        labels.write_text(json.dumps(table))
    else:
        labels = tmp_path / "labels.csv"
        labels.write_text("file,labels\n" + "".join(f"{f},{';'.join(v)}\n" for f, v in table.items()))
    data = multilabel_dataset(root, labels, name="toy")
    assert data.multilabel and data.classes == ("forest", "water")
    assert data.labels.tolist() == [[1, 1], [0, 1]]


def test_multilabel_missing_image_and_bad_columns(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("file,labels\nnope.jpg,a\n")
    with pytest.raises(DataError, match=r"missing under .*nope\.jpg"):
        multilabel_dataset(tmp_path, labels)
    labels.write_text("path,classes\nx.jpg,a\n")
    with pytest.raises(DataError, match="expected CSV columns 'file' and 'labels'"):
        multilabel_dataset(tmp_path, labels)


@pytest.mark.parametrize("layout", ["contig", "separate", "pages"])
def test_geotiff_with_more_bands_than_pixels_per_side(tmp_path, layout):
    # a 12-band 10 x 10 tile: the band axis is not the smallest one, the file's layout says where it is
    bands_first = np.arange(12 * 10 * 10, dtype=np.uint16).reshape(12, 10, 10)
    path = tmp_path / "tile.tif"
    if layout == "contig":  # pixel-interleaved, [H, W, C] (GDAL's default)
        tifffile.imwrite(path, bands_first.transpose(1, 2, 0), photometric="minisblack", planarconfig="contig")
    elif layout == "separate":  # band-interleaved, [C, H, W]
        tifffile.imwrite(path, bands_first, photometric="minisblack", planarconfig="separate")
    else:  # one page per band
        tifffile.imwrite(path, bands_first, photometric="minisblack")
    image = read_image(path)
    assert image.shape == (12, 10, 10)
    np.testing.assert_array_equal(image, bands_first.astype(np.float32))


def test_png_modes_convert_to_rgb_and_16_bit_is_refused(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((4, 4), 90, dtype=np.uint8), "L").save(tmp_path / "gray.png")
    assert read_image(tmp_path / "rgba.png")[:, 0, 0].tolist() == [200, 0, 0]  # alpha dropped
    assert read_image(tmp_path / "gray.png")[:, 0, 0].tolist() == [90, 90, 90]
    Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(DataError, match=r"deep\.png: a I;16 image .*8-bit RGB.*GeoTIFF"):
        read_image(tmp_path / "deep.png")


def test_multilabel_lists_that_must_not_be_misread(tmp_path):
    root = _tree(tmp_path, per_class=1)
    files = [f"{cls}/{next((root / cls).glob('*.jpg')).name}" for cls in ("Forest", "River")]
    import json

    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({files[0]: "forest", files[1]: ["water"]}))  # a string, not a list
    with pytest.raises(DataError, match=r"labels of .* are 'forest'; expected a list of label strings"):
        multilabel_dataset(root, labels)
    csv_file = tmp_path / "labels.csv"
    # quoted list with spaces, a row without the labels cell, an empty label between separators
    csv_file.write_text(f'file,labels\n{files[0]}\n{files[1]},"water ; forest;;"\n')
    data = multilabel_dataset(root, csv_file)
    assert data.classes == ("forest", "water") and data.labels.tolist() == [[0, 0], [1, 1]]
    csv_file.write_text(f"\ufefffile,labels\n{files[0]},forest\n", encoding="utf-8")  # Excel's byte-order mark
    assert multilabel_dataset(root, csv_file).classes == ("forest",)
    csv_file.write_text(f"file,labels\n{files[0]},\n{files[1]},\n")
    with pytest.raises(DataError, match="gives no image any label"):
        multilabel_dataset(root, csv_file)


def test_hidden_files_and_folders_are_skipped(tmp_path):
    root = _tree(tmp_path, per_class=2)
    (root / ".git").mkdir()
    first = next((root / "River").glob("*.jpg"))
    first.rename(root / "River" / "forêt #1 (copy).JPG")  # unusual characters, upper-case suffix
    (root / "River" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "River" / "._forest.jpg").write_bytes(b"\0\5\x16\7 AppleDouble")  # macOS metadata, not a JPEG
    data = class_folder_dataset(root)
    assert data.classes == ("Forest", "River") and len(data) == 4
    assert [Path(p).name.startswith(".") for p in data.items] == [False] * 4
    assert "forêt #1 (copy).JPG" in {Path(p).name for p in data.items}
    assert all(data.read(i).shape == (3, 64, 64) for i in range(4))
