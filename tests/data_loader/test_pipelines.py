"""tf.data pipelines of the three stages, evaluation cases and the synthetic-data bootstrap (data_loader.pipelines).

One tiny synthetic data set per module (5 subjects: 3 train / 1 val / 1 test, T=6, X=32, Y=24, C=4, SNR 30 dB) with
its VISTA cache in tmp. The acceleration grid R = 2..6 at Y = 24 gives 12, 8, 6, 5, 4 lines per frame, so the
effective acceleration of a mask tells its nominal R uniquely.

Data convention checked: the synthetic k-space is noisy (``fft2c(reference * maps)`` + noise) and ``reference`` is
the noise-free phantom. The pipelines sample the stored (noisy) k-space, so ``y`` is compared exactly with
``mask * stored k-space`` and only up to the noise level with ``mask * fft2c(reference * maps)``.
"""
from __future__ import annotations

import dataclasses
import shutil

import h5py
import numpy as np
import pytest
import tensorflow as tf

from data_loader import pipelines as P
from data_loader.masks import equispaced_mask, get_vista_mask, write_mask_txt
from data_loader.vista import lines_per_frame
from utils.mri import adjoint_np, fft2c_np
from utils.schema import DataConfig

SIZE = [6, 32, 24, 4]
NT, NX, NY, NC = SIZE
GRID = [2, 3, 4, 5, 6]
SEEDS = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> DataConfig:
    base = tmp_path_factory.mktemp("pipelines")
    config = DataConfig(root=str(base / "data"), size=list(SIZE), subjects=5, seed=3, snr_db=30.0,
                        mask_cache=str(base / "masks"), min_r=2.0, max_r=6.0, mask_seeds=len(SEEDS),
                        contrastive_min_gap=3.0, start_r=2.0, train_r=[2.0, 4.0], val_r=4.0, num_parallel_calls=2)
    P.ensure_synthetic_data(config)
    return config


@pytest.fixture(scope="module")
def train(cfg) -> P.SplitData:
    return P.load_split(cfg, "train")


def take(ds: tf.data.Dataset, n: int) -> list:
    """The first ``n`` elements as numpy; fails if the stream has fewer (so no loop over it can pass empty)."""
    out = [tf.nest.map_structure(lambda t: t.numpy(), el) for el in ds.take(n)]
    assert len(out) == n, f"the stream ended after {len(out)} of {n} elements"
    return out


def source_of(view: dict, data: P.SplitData) -> int:
    """Index of the example whose masked stored k-space is the view's ``y``."""
    hits = [j for j in range(len(data))
            if data.shape(j) == view["y"].shape[1:] and np.allclose(view["y"][0], view["mask"][0] * data.kspace[j],
                                                                      rtol=0, atol=1e-6)]
    assert len(hits) == 1, f"view matches examples {hits}"
    return hits[0]


def nominal_r(mask: np.ndarray) -> int:
    """Nominal R of a (1,T,1,Y,1) VISTA mask from its lines per frame (unique on GRID at Y = 24)."""
    per_frame = set(mask[0, :, 0, :, 0].sum(axis=1).astype(int).tolist())
    assert len(per_frame) == 1, f"VISTA mask with varying lines per frame {per_frame}"
    lines = per_frame.pop()
    matches = [r for r in GRID if lines_per_frame(NY, r) == lines]
    assert len(matches) == 1
    return matches[0]


def vista_index(mask_ty: np.ndarray, cfg: DataConfig) -> tuple[int, int]:
    """(R, seed) of the bank mask equal to a (T, Y) mask."""
    for r in GRID:
        for s in SEEDS:
            if np.array_equal(get_vista_mask(NY, NT, r, s, cache_dir=cfg.mask_cache).T, mask_ty):
                return r, s
    raise AssertionError("mask is not one of the VISTA bank masks")


def check_view(view: dict, data: P.SplitData, index: int) -> None:
    """y = mask * stored k-space, x = A^H y, coil maps of the example, binary mask."""
    mask, maps = view["mask"], data.coil_maps[index][None]
    assert set(np.unique(mask)) <= {0.0, 1.0}
    np.testing.assert_allclose(view["y"], mask * data.kspace[index][None], rtol=0, atol=1e-6)
    np.testing.assert_allclose(view["x"], adjoint_np(view["y"], mask, maps), rtol=1e-5, atol=1e-5)
    if "coil_maps" in view:
        np.testing.assert_array_equal(view["coil_maps"], maps)


def spec_summary(spec) -> object:
    return tf.nest.map_structure(lambda s: (tuple(s.shape), s.dtype), spec)


# --------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("method, views", [("vicreg", 2), ("contrastive", 3)])
def test_feature_dataset_shapes_and_dtypes(cfg, method, views):
    ds = P.feature_dataset(cfg, method, "train", seed=0)
    spec = ds.element_spec
    assert list(spec) == ["views"] and len(spec["views"]) == views
    expected = {"x": ((1, NT, NX, NY, 1), tf.complex64), "y": ((1, NT, NX, NY, NC), tf.complex64),
                "mask": ((1, NT, 1, NY, 1), tf.float32), "coil_maps": ((1, 1, NX, NY, NC), tf.complex64)}
    for view in spec["views"]:
        assert spec_summary(view) == expected
    element = take(ds, 1)[0]
    assert element["views"][0]["x"].shape == (1, NT, NX, NY, 1)


def test_recon_dataset_shapes_and_dtypes(cfg):
    ds = P.recon_dataset(cfg, "train", seed=0, batch_size=2)
    image, kspace, mask = (2, NT, NX, NY, 1), (2, NT, NX, NY, NC), (2, NT, 1, NY, 1)
    view = {"x": (image, tf.complex64), "y": (kspace, tf.complex64), "mask": (mask, tf.float32)}
    assert spec_summary(ds.element_spec) == {"view1": view, "view2": view,
                                             "coil_maps": ((2, 1, NX, NY, NC), tf.complex64),
                                             "reference": (image, tf.complex64)}
    one_pass = list(P.recon_dataset(cfg, "val", repeat=False, batch_size=1))
    assert len(one_pass) == P.num_examples(cfg, "val") == 1


# ----------------------------------------------------------------------------------------- content
def test_vicreg_views_differ_and_share_the_slice(cfg, train):
    for element in take(P.feature_dataset(cfg, "vicreg", "train", seed=1), 12):
        v1, v2 = element["views"]
        assert not np.array_equal(v1["mask"], v2["mask"]), "the two views have the same mask"
        i = source_of(v1, train)
        assert source_of(v2, train) == i
        for view in (v1, v2):
            check_view(view, train, i)
            # initial_acc = 1: the effective mask is a bank VISTA mask itself
            vista_index(view["mask"][0, :, 0, :, 0], cfg)


def test_y_matches_the_reference_up_to_noise(cfg, train):
    element = take(P.feature_dataset(cfg, "vicreg", "train", seed=2), 1)[0]
    view = element["views"][0]
    i = source_of(view, train)
    clean = view["mask"] * fft2c_np(train.image[i][None] * train.coil_maps[i][None])
    relative = np.linalg.norm(view["y"] - clean) / np.linalg.norm(clean)
    # 30 dB image SNR: the sampled noise is a few percent of the sampled signal, never zero
    assert 1e-4 < relative < 0.2, relative


def test_contrastive_diff_rule(cfg, train):
    subjects_seen, r1_seen = set(), set()
    for element in take(P.feature_dataset(cfg, "contrastive", "train", seed=4), 30):
        v1, v2, v3 = element["views"]
        i, j = source_of(v1, train), source_of(v3, train)
        assert source_of(v2, train) == i
        assert train.subjects[j] != train.subjects[i], "the negative view comes from the same subject"
        for view, index in ((v1, i), (v2, i), (v3, j)):
            check_view(view, train, index)
        r1, r2, r3 = (nominal_r(v["mask"]) for v in (v1, v2, v3))
        assert r1 == r2, "positive views must share the acceleration"
        assert not np.array_equal(v1["mask"], v2["mask"]), "positive views need different seeds"
        assert abs(r1 - r3) >= cfg.contrastive_min_gap
        assert r1 != 4, "R1 = 4 has no R3 three apart on 2..6 and must not be drawn"
        subjects_seen.add(train.subjects[i])
        r1_seen.add(r1)
    assert len(subjects_seen) == 3 and len(r1_seen) >= 3


def test_contrastive_random_rule(cfg, train):
    random_cfg = dataclasses.replace(cfg, contrastive_rule="random")
    for element in take(P.feature_dataset(random_cfg, "contrastive", "train", seed=5), 15):
        v1, v2, v3 = element["views"]
        pairs = [vista_index(v["mask"][0, :, 0, :, 0], cfg) for v in (v1, v2, v3)]
        assert pairs[0][0] == pairs[1][0] and pairs[0][1] != pairs[1][1]
        assert pairs[2] not in pairs[:2]


def test_contrastive_needs_two_subjects(cfg):
    with pytest.raises(ValueError, match="at least 2 subjects"):
        P.feature_dataset(cfg, "contrastive", "val")


def test_recon_views(cfg):
    data = P.load_split(cfg, "train")
    base = get_vista_mask(NY, NT, cfg.start_r, P.BASE_MASK_SEED, cache_dir=cfg.mask_cache).T[None, :, None, :, None]
    for element in take(P.recon_dataset(cfg, "train", seed=6), 8):
        v1, v2 = element["view1"], element["view2"]
        assert not np.array_equal(v1["mask"], v2["mask"])
        i = source_of(v1, data)
        assert source_of(v2, data) == i
        for view in (v1, v2):
            check_view({**view, "coil_maps": element["coil_maps"]}, data, i)
            assert np.all(view["mask"] <= base), "a view samples outside the acquired (base) mask"
            remasks = [(r, s) for r in (2, 3, 4) for s in SEEDS
                       if np.array_equal(base[0, :, 0, :, 0] * get_vista_mask(NY, NT, r, s, cfg.mask_cache).T,
                                         view["mask"][0, :, 0, :, 0])]
            assert remasks, "view mask is not base x VISTA(R in train_r)"
        np.testing.assert_array_equal(element["reference"][0], data.image[i])
        np.testing.assert_array_equal(element["coil_maps"][0], data.coil_maps[i])


def test_recon_val_uses_val_r(cfg):
    data = P.load_split(cfg, "val")
    base = get_vista_mask(NY, NT, cfg.start_r, P.BASE_MASK_SEED, cache_dir=cfg.mask_cache).T
    element = take(P.recon_dataset(cfg, "val", seed=0), 1)[0]
    for view in (element["view1"], element["view2"]):
        remask = [s for s in SEEDS
                  if np.array_equal(base * get_vista_mask(NY, NT, cfg.val_r, s, cache_dir=cfg.mask_cache).T,
                                    view["mask"][0, :, 0, :, 0])]
        assert remask, "validation view is not base x VISTA(val_r)"
    source_of(element["view1"], data)


# ------------------------------------------------------------------------------- order and determinism
def test_same_seed_same_stream_other_seed_other_masks(cfg):
    a = take(P.feature_dataset(cfg, "vicreg", "train", seed=11), 6)
    b = take(P.feature_dataset(cfg, "vicreg", "train", seed=11), 6)
    c = take(P.feature_dataset(cfg, "vicreg", "train", seed=12), 6)
    for x, y in zip(a, b):
        tf.nest.map_structure(np.testing.assert_array_equal, x, y)
    masks = lambda els: np.stack([v["mask"] for el in els for v in el["views"]])  # noqa: E731
    assert not np.array_equal(masks(a), masks(c))
    r1 = take(P.recon_dataset(cfg, "train", seed=11), 4)
    r2 = take(P.recon_dataset(cfg, "train", seed=11), 4)
    for x, y in zip(r1, r2):
        tf.nest.map_structure(np.testing.assert_array_equal, x, y)


def test_shuffle_covers_every_example_and_changes_order_across_epochs(cfg, train):
    n = len(train)
    elements = take(P.feature_dataset(cfg, "vicreg", "train", seed=7), 6 * n)
    order = [source_of(el["views"][0], train) for el in elements]
    epochs = [tuple(order[k * n:(k + 1) * n]) for k in range(6)]
    assert all(sorted(e) == list(range(n)) for e in epochs), epochs
    assert len(set(epochs)) > 1, f"the same order in every epoch: {epochs}"
    # masks are redrawn every epoch too
    first = [el["views"][0]["mask"] for el in elements]
    assert any(not np.array_equal(first[k], first[k + n]) for k in range(n))


def test_val_stream_is_fixed_and_ordered(cfg):
    data = P.load_split(cfg, "val")
    n = len(data)
    assert n >= 1
    stream = take(P.feature_dataset(cfg, "vicreg", "val", seed=0), 3 * n)
    # every pass over the val split gives the same elements in the same order
    for k, later in enumerate(stream[n:], start=n):
        tf.nest.map_structure(np.testing.assert_array_equal, later, stream[k % n])
    # and in subject order
    assert [source_of(el["views"][0], data) for el in stream[:n]] == list(range(n))


def test_slices_of_different_sizes(cfg, tmp_path):
    # the original data vary in nPE between subjects: add two subjects with Y = 20 to a copy of the data set
    from data_loader import formats
    from data_loader.phantom import make_subject

    root = tmp_path / "mixed"
    shutil.copytree(cfg.root, root)
    rows = formats.read_dataset_csv(root / "train.csv")
    for k in range(2):
        name = f"narrow_{k}"
        subject = make_subject(NT, NX, 20, NC, seed=100 + k, snr=None)
        formats.write_h5_subject(root / f"{name}.h5", subject["kspace"], subject["image"], subject["coil_maps"])
        rows.append(formats.SubjectRow(name, NX, 20, NC, NT, 1))
    formats.write_dataset_csv(root / "train.csv", rows)
    mixed = dataclasses.replace(cfg, root=str(root))
    data = P.load_split(mixed, "train")
    ds = P.feature_dataset(mixed, "contrastive", "train", seed=0)
    assert ds.element_spec["views"][0]["y"].shape.as_list() == [1, NT, NX, None, NC]
    widths = set()
    for element in take(ds, 15):
        v1, v2, v3 = element["views"]
        i, j = source_of(v1, data), source_of(v3, data)
        assert source_of(v2, data) == i and data.subjects[j] != data.subjects[i]
        for view, index in ((v1, i), (v2, i), (v3, j)):
            check_view(view, data, index)
        widths.update({v1["y"].shape[3], v3["y"].shape[3]})
    assert widths == {20, NY}
    with pytest.raises(ValueError, match="different sizes"):
        P.recon_dataset(mixed, batch_size=2)
    element = take(P.recon_dataset(mixed, seed=1), 1)[0]
    check_view({**element["view1"], "coil_maps": element["coil_maps"]}, data, source_of(element["view1"], data))


# ------------------------------------------------------------------------------------------- dummy
def test_dummy_mode(tmp_path):
    dummy = DataConfig(root=str(tmp_path / "nowhere"), size=[4, 16, 12, 3], subjects=3, dummy=True)
    assert P.ensure_synthetic_data(dummy) == tmp_path / "nowhere" and not (tmp_path / "nowhere").exists()
    for method, views in (("vicreg", 2), ("contrastive", 3)):
        element = take(P.feature_dataset(dummy, method, seed=0), 1)[0]
        assert len(element["views"]) == views
        view = element["views"][0]
        assert view["x"].shape == (1, 4, 16, 12, 1) and view["x"].dtype == np.complex64
        assert view["y"].shape == (1, 4, 16, 12, 3) and view["coil_maps"].shape == (1, 1, 16, 12, 3)
        assert view["mask"].shape == (1, 4, 1, 12, 1) and set(np.unique(view["mask"])) <= {0.0, 1.0}
        assert 0 <= view["x"].real.min() and view["x"].real.max() < 1
    recon = take(P.recon_dataset(dummy, batch_size=2, seed=0), 1)[0]
    assert recon["view1"]["y"].shape == (2, 4, 16, 12, 3) and recon["reference"].shape == (2, 4, 16, 12, 1)
    assert len(list(P.recon_dataset(dummy, repeat=False))) == P.num_examples(dummy, "train") == 3
    cases = list(P.eval_cases(dummy, "test", 4))
    assert len(cases) == 3 and cases[0]["y"].shape == (1, 4, 16, 12, 3)


# -------------------------------------------------------------------------------------- evaluation
def test_eval_cases_deterministic_and_consistent(cfg):
    data = P.load_split(cfg, "test")
    first = list(P.eval_cases(cfg, "test", 4, seed=0))
    again = list(P.eval_cases(cfg, "test", 4, seed=0))
    other = list(P.eval_cases(cfg, "test", 4, seed=1))
    assert [c["name"] for c in first] == data.names
    for a, b in zip(first, again):
        assert a["name"] == b["name"]
        for key in ("x", "y", "mask", "coil_maps", "reference"):
            np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(first[0]["mask"], other[0]["mask"])
    case = first[0]
    assert case["x"].shape == (1, NT, NX, NY, 1) and case["x"].dtype == np.complex64
    assert case["mask"].shape == (1, NT, 1, NY, 1) and case["mask"].dtype == np.float32
    assert nominal_r(case["mask"]) == 4
    np.testing.assert_allclose(case["y"], case["mask"] * data.kspace[0][None], rtol=0, atol=1e-6)
    np.testing.assert_allclose(case["x"], adjoint_np(case["y"], case["mask"], case["coil_maps"]), atol=1e-6)
    np.testing.assert_array_equal(case["reference"][0], data.image[0])
    gaussian = next(P.eval_cases(cfg, "test", 4, mask_kind="gaussian"))
    assert gaussian["mask"].shape == (1, NT, 1, NY, 1)


# ------------------------------------------------------------------------------ original layout
def test_original_source_simulates_kspace_from_image_and_maps(cfg, tmp_path):
    # make-data's mask_GRAPPA files keep 24 centre lines, i.e. everything at Y = 24: replace them by a real 2x
    # acquisition so that using the stored mask is visible
    root = tmp_path / "original"
    shutil.copytree(cfg.root, root)
    acquired = equispaced_mask(NY, NT, acc=2, num_center=4)
    for path in root.glob("mask_GRAPPA_*.txt"):
        write_mask_txt(path, acquired)
    original = dataclasses.replace(cfg, root=str(root), source="original", initial_acc=2.0)
    data = P.load_split(original, "train")
    assert data.kspace is None
    for element in take(P.feature_dataset(original, "vicreg", "train", seed=0), 4):
        view = element["views"][0]
        # identify the slice by its coil maps, then check y against fft2c(image * maps), the fixed simulation
        i = next(j for j in range(len(data)) if np.array_equal(view["coil_maps"][0], data.coil_maps[j]))
        simulated = fft2c_np(data.image[i][None] * data.coil_maps[i][None])
        np.testing.assert_allclose(view["y"], view["mask"] * simulated, rtol=0, atol=1e-5)
        np.testing.assert_allclose(view["x"], adjoint_np(view["y"], view["mask"], view["coil_maps"]), atol=1e-5)
        # initial_acc > 1 takes the stored mask_GRAPPA acquisition: M = M_0 * VISTA(R, seed)
        remasks = [(r, s) for r in GRID for s in SEEDS
                   if np.array_equal(acquired.T * get_vista_mask(NY, NT, r, s, cfg.mask_cache).T,
                                     view["mask"][0, :, 0, :, 0])]
        assert remasks, "view mask is not M_0 x VISTA"
        assert np.all(view["mask"][0, :, 0, :, 0] <= acquired.T)


# ---------------------------------------------------------------------------------------- errors
def test_missing_folder_and_csv_name_the_path(cfg, tmp_path):
    missing = dataclasses.replace(cfg, root=str(tmp_path / "absent"), source="h5")
    with pytest.raises(FileNotFoundError, match="absent"):
        P.feature_dataset(missing, "vicreg")
    no_csv = dataclasses.replace(cfg, train_csv="nope.csv")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        P.recon_dataset(no_csv)


def test_bad_data_errors_name_the_file(cfg, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(cfg.root, root)
    bad = dataclasses.replace(cfg, root=str(root), source="h5")
    csv_path = root / "train.csv"
    good_csv = csv_path.read_text()
    lines = good_csv.splitlines()
    cells = lines[1].split(",")
    cells[2] = str(int(cells[2]) + 1)  # nPE disagrees with the arrays
    csv_path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match=f"{cells[0]}.h5"):
        P.feature_dataset(bad, "vicreg")
    csv_path.write_text(good_csv)
    name = lines[1].split(",")[0]
    with h5py.File(root / f"{name}.h5", "r+") as f:
        f["kspace"][0, 0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=rf"{name}\.h5.*NaN"):
        P.recon_dataset(bad)


def test_ensure_synthetic_data_is_cached_by_stamp(tmp_path):
    small = DataConfig(root=str(tmp_path / "syn"), size=[2, 8, 8, 2], subjects=3, seed=0)
    root = P.ensure_synthetic_data(small)
    stamp = root / ".ssfl_synthetic.json"
    first = (root / "train.csv").stat().st_mtime_ns, stamp.stat().st_mtime_ns
    assert P.ensure_synthetic_data(small) == root
    assert ((root / "train.csv").stat().st_mtime_ns, stamp.stat().st_mtime_ns) == first
    changed = dataclasses.replace(small, seed=1)
    P.ensure_synthetic_data(changed)
    assert '"seed": 1' in stamp.read_text()
    assert P.num_examples(changed, "train") + P.num_examples(changed, "val") + P.num_examples(changed, "test") == 3


def test_time_pipeline_returns_seconds_per_example(cfg):
    seconds = P.time_pipeline(P.recon_dataset(cfg, "train", seed=0, batch_size=2), n=3, warmup=1)
    assert seconds > 0
    with pytest.raises(ValueError):
        P.time_pipeline(P.recon_dataset(cfg, "val", repeat=False), n=1, warmup=5)


# --------------------------------------------------------------------- the original's validation, DDEI's data
def test_recon_val_range_and_redraw(cfg):
    # val R drawn from val_r_range (the original: 2-16) and, with val_redraw, anew on every pass
    data = P.load_split(cfg, "val")
    assert len(data) == 1
    wide = dataclasses.replace(cfg, val_r_range=[2.0, 6.0], val_redraw=True)
    base = get_vista_mask(NY, NT, cfg.start_r, P.BASE_MASK_SEED, cache_dir=cfg.mask_cache).T
    allowed = {(r, s): base * get_vista_mask(NY, NT, r, s, cache_dir=cfg.mask_cache).T for r in GRID for s in SEEDS}
    passes = take(P.recon_dataset(wide, "val", seed=0), 12)
    seen = set()
    for element in passes:
        for view in (element["view1"], element["view2"]):
            hits = [key for key, mask in allowed.items() if np.array_equal(mask, view["mask"][0, :, 0, :, 0])]
            assert hits, "validation view is not base x VISTA(R in val_r_range)"
            seen.add(tuple(view["mask"][0, :, 0, :, 0].ravel()))
    assert len(seen) > 2  # new masks on later passes
    fixed = take(P.recon_dataset(dataclasses.replace(cfg, val_r_range=[2.0, 6.0]), "val", seed=0), 3)
    for later in fixed[1:]:  # without val_redraw every pass is the first
        tf.nest.map_structure(np.testing.assert_array_equal, later, fixed[0])


def test_time_windows_and_video_normalisation_at_load(cfg, train):
    windowed = dataclasses.replace(cfg, time_window=3)
    data = P.load_split(windowed, "train")
    assert len(data) == 2 * len(train) == P.num_examples(windowed, "train")
    assert data.names[:2] == [f"{train.names[0]}_t0", f"{train.names[0]}_t3"]
    np.testing.assert_array_equal(data.image[1], train.image[0][3:6])
    np.testing.assert_array_equal(data.kspace[1], train.kspace[0][3:6])
    normalised = P.load_split(dataclasses.replace(cfg, time_window=3, video_normalisation="reference"), "train")
    for k, image in enumerate(normalised.image):
        parts = np.stack([image.real, image.imag])
        assert abs(parts.mean()) < 1e-5 and parts.std(ddof=1) == pytest.approx(1.0, rel=1e-4)
        # the k-space stays the image's: y_n - F(S x_n) equals (y - F(S x)) / std, the stored noise scaled
        std = np.stack([data.image[k].real, data.image[k].imag]).std(ddof=1)
        maps = normalised.coil_maps[k]
        np.testing.assert_allclose(normalised.kspace[k] - fft2c_np(maps * image, axes=(1, 2)),
                                   (data.kspace[k] - fft2c_np(maps * data.image[k], axes=(1, 2))) / std,
                                   atol=1e-4)
    with pytest.raises(ValueError, match="time_window 7 exceeds its 6 frames"):
        P.load_split(dataclasses.replace(cfg, time_window=7), "train")
    # statistics of the zero-filled image under the stored acquisition mask
    from data_loader.video_windows import video_stats, window_and_normalise

    zero_filled = P.load_split(dataclasses.replace(cfg, video_normalisation="zero_filled"), "train")
    mask = np.transpose(train.initial_mask[0].astype(np.float32))[:, None, :, None]
    mean, std = video_stats(adjoint_np(train.kspace[0] * mask, mask, train.coil_maps[0]))
    np.testing.assert_allclose(zero_filled.image[0], (train.image[0] - mean * (1 + 1j)) / std, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="'zero_filled' needs the stored acquisition"):
        window_and_normalise("case", train.image[0], train.kspace[0], train.coil_maps[0], None, 0, "zero_filled")
