"""The synthetic butterflies: deterministic, symmetric, fast, captioned as drawn; clear errors."""

import time

import numpy as np
import pytest
import torch

from ddlearn.data.butterflies.datasets import ButterflyDataset, load_butterflies, to_hf_dataset
from ddlearn.data.butterflies.drawing import (
    COLOURS,
    NUM_CLASSES,
    PATTERNS,
    SHAPES,
    caption_for,
    caption_vocabulary,
    class_names,
    make_butterfly,
)
from ddlearn.hub import HubOfflineError


def test_same_seed_same_bytes_different_seeds_differ():
    for size in (32, 64):
        first, attrs = make_butterfly(123, size)
        again, attrs_again = make_butterfly(123, size)
        assert first.dtype == np.uint8 and first.shape == (size, size, 3)
        assert first.tobytes() == again.tobytes() and attrs == attrs_again
    images = [make_butterfly(seed)[0].tobytes() for seed in range(50)]
    assert len(set(images)) == 50


@pytest.mark.parametrize("size", [32, 48, 64])
def test_unjittered_butterfly_is_exactly_mirror_symmetric(size):
    for seed in range(20):  # covers every shape and pattern
        image, _ = make_butterfly(seed, size, jitter=False)
        assert np.array_equal(image, image[:, ::-1])
        jittered, _ = make_butterfly(seed, size)
        assert not np.array_equal(jittered, image)  # the pose jitter does move it


def test_plain_wing_colour_is_the_named_colour():
    """At an unjittered plain butterfly's forewing centre, the nearest named colour is its own."""
    names, table = list(COLOURS), np.array(list(COLOURS.values())) * 255
    checked = 0
    for seed in range(300):
        image, attrs = make_butterfly(seed, 32, jitter=False)
        if attrs["pattern"] != "plain":
            continue
        pixel = image[13, 22].astype(float)  # forewing centre (0.44, -0.28) in body units
        assert names[np.argmin(((table - pixel) ** 2).sum(1))] == attrs["colour"], attrs
        checked += 1
    assert checked > 30


def test_captions_and_labels_match_attributes():
    seen = set()
    words = set(caption_vocabulary())
    for seed in range(400):
        _, a = make_butterfly(seed)
        assert a["caption"] == caption_for(a["colour"], a["pattern"], a["pattern_colour"])
        assert set(a["caption"].split()) <= words
        assert a["label"] == list(COLOURS).index(a["colour"]) * len(PATTERNS) \
            + PATTERNS.index(a["pattern"])
        assert class_names()[a["label"]] == f"{a['colour']} {a['pattern']}"
        assert a["shape"] in SHAPES and a["pattern_colour"] != a["colour"]
        seen.add((a["colour"], a["pattern"], a["shape"]))
    assert caption_for("blue", "spots", "orange") == "a blue butterfly with orange spots"
    assert caption_for("red", "plain", None) == "a plain red butterfly"
    assert len({(c, p) for c, p, _ in seen}) == NUM_CLASSES == 45  # every class occurs
    assert len({s for _, _, s in seen}) == len(SHAPES)


def test_speed_is_well_above_200_images_per_second():
    make_butterfly(0, 32)
    start, n = time.process_time(), 200
    for seed in range(n):
        make_butterfly(seed, 32)
    assert n / (time.process_time() - start) > 200


def test_torch_dataset_gives_batches_in_minus_one_one():
    data = ButterflyDataset(10, size=32, seed=3)
    item = data[4]
    image, attrs = make_butterfly(3 * 1_000_000 + 4, 32)
    assert item["images"].shape == (3, 32, 32) and item["images"].dtype == torch.float32
    expected = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(item["images"], expected)
    assert item["label"] == attrs["label"] and item["caption"] == attrs["caption"]
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch["images"].shape == (4, 3, 32, 32) and batch["label"].shape == (4,)
    assert -1 <= batch["images"].min() and batch["images"].max() <= 1
    assert len(batch["caption"]) == 4 and isinstance(batch["caption"][0], str)
    test_split = ButterflyDataset(10, size=32, seed=3, split="test")
    assert not torch.equal(test_split[4]["images"], item["images"])
    flipped = ButterflyDataset(10, size=32, seed=3, flip=True)
    torch.manual_seed(0)
    assert any(not torch.equal(flipped[4]["images"], item["images"]) for _ in range(20))
    with_transform = ButterflyDataset(2, size=32, transform=lambda pil: pil.size)
    assert with_transform[0]["images"] == (32, 32)
    with pytest.raises(IndexError):
        data[10]


def test_hf_dataset_columns_like_the_smithsonian_subset():
    data = to_hf_dataset(6, size=32, seed=1)
    assert data.column_names == ["image", "caption", "label"] and len(data) == 6
    row = data[2]
    image, attrs = make_butterfly(1_000_000 + 2, 32)
    assert row["image"].size == (32, 32) and row["image"].mode == "RGB"
    assert np.array_equal(np.asarray(row["image"]), image)
    assert row["caption"] == attrs["caption"] and row["label"] == attrs["label"]
    assert data.features["label"].names == class_names()
    same = load_butterflies(n=6, size=32, seed=1)
    assert same["caption"] == data["caption"]


def test_smithsonian_offline_fails_fast_and_suggests_synthetic(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(HubOfflineError, match='source="synthetic"'):
        load_butterflies("smithsonian")
    assert time.perf_counter() - start < 2


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown source 'imagenet'"):
        load_butterflies("imagenet")
    with pytest.raises(ValueError, match="split must be one of"):
        ButterflyDataset(10, split="validation")
    with pytest.raises(ValueError, match="size must be an integer >= 8"):
        make_butterfly(0, size=4)


def test_smithsonian_unreachable_hub_fails_fast(monkeypatch):
    """Online mode but no network: one clear error at once, not the hub client's retries."""
    import socket

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)

    def no_network(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    start = time.perf_counter()
    with pytest.raises(HubOfflineError, match="unreachable.*source=\"synthetic\""):
        load_butterflies("smithsonian")
    assert time.perf_counter() - start < 2


def test_every_public_name_is_importable_from_the_package_and_from_ddlearn_data():
    import ddlearn.data
    import ddlearn.data.butterflies as butterflies
    from ddlearn.data.butterflies import datasets, drawing

    defined = [(module, name) for module in (drawing, datasets)
               for name, value in vars(module).items() if not name.startswith("_")
               and (name.isupper() or getattr(value, "__module__", None) == module.__name__)]
    assert len(defined) == 18  # 8 constants, 5 functions of the drawing; 2 + 3 of the datasets
    for module, name in defined:
        assert getattr(butterflies, name) is getattr(module, name), name
        assert getattr(ddlearn.data, name) is getattr(module, name), name
