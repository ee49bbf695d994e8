"""Your own data (npz, image_folder): what is read, what is refused in one line, and the content hash."""

import numpy as np
import pytest
from PIL import Image

from slimlab import data
from slimlab.errors import ConfigError
from slimlab.kit.files import content_sha256
from slimlab.plugins.data import image_folder, npz


def test_the_content_hash_tells_layouts_apart_and_follows_symlinked_folders(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    (one / "a").mkdir(parents=True)
    (two / "a").mkdir(parents=True)
    (one / "a/x").write_bytes(b"12")
    (one / "a/y").write_bytes(b"3")
    (two / "a/x").write_bytes(b"1")
    (two / "a/y").write_bytes(b"23")  # the same bytes in the same order, split differently
    assert content_sha256(one, what="w") != content_sha256(two, what="w")
    assert content_sha256(one, two, what="w") != content_sha256(two, one, what="w")

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "1.png").write_bytes(b"first")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "cats").symlink_to(shared)
    (linked / "cats/loop").symlink_to(linked)  # a link back up the tree is not followed
    before = content_sha256(linked, what="w")
    (shared / "1.png").write_bytes(b"changed")
    assert content_sha256(linked, what="w") != before
    with pytest.raises(ConfigError, match="^w: .*nowhere does not exist$"):
        content_sha256(tmp_path / "nowhere", what="w")


def test_labels_as_a_column_are_taken_and_other_shapes_refused_in_one_line():
    x = np.zeros((4, 2, 2), np.uint8)
    got_x, got_y = data.examples(x, np.array([[0], [1], [0], [1]]), "d")
    assert got_x.shape == (4, 2, 2, 1) and got_x.dtype == np.float32 and got_y.tolist() == [0, 1, 0, 1]
    with pytest.raises(ConfigError, match=r"^d: labels have shape \(4, 2\); .* \(one-hot\? give class indices"):
        data.examples(x, np.eye(2)[[0, 1, 0, 1]], "d")
    with pytest.raises(ConfigError, match="^d: holds no images$"):
        data.examples(x[:0], np.zeros(0), "d")
    with pytest.raises(ConfigError, match="non-numeric"):
        data.examples(np.array([["a"]] * 4), np.zeros(4), "d")


def test_npz_refuses_a_bare_npy_and_leaves_non_numbers_to_the_checks(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(ConfigError, match=r"x.npy: a single array \(.npy\), not an .npz holding 'x' and 'y'"):
        npz.load_npz(npz.NpzParams(path=str(tmp_path / "x.npy")))
    np.savez(tmp_path / "s.npz", x=np.array(["a", "b"]), y=np.array([0, 1]))
    x, _ = npz.load_npz(npz.NpzParams(path=str(tmp_path / "s.npz"), scale=0.5))
    assert x.dtype.kind == "U"  # data.examples names it
    np.savez(tmp_path / "u8.npz", x=np.full((2, 2, 2), 255, np.uint8), y=np.array([0, 1]))
    x, _ = npz.load_npz(npz.NpzParams(path=str(tmp_path / "u8.npz"), scale=1 / 255))
    assert x.dtype == np.float32 and np.allclose(x, 1.0)


def test_image_folder_names_a_file_given_as_the_folder_and_an_image_that_will_not_decode(tmp_path):
    (tmp_path / "cats").mkdir()
    Image.new("RGB", (5, 3), (255, 0, 0)).save(tmp_path / "cats/red.png")
    params = image_folder.ImageFolderParams(path=str(tmp_path), size=(4, 2), range="symmetric")
    x, y = image_folder.load_image_folder(params)
    assert x.shape == (1, 4, 2, 3) and np.allclose(x[0, ..., 0], 1.0) and np.allclose(x[0, ..., 1], -1.0)
    with pytest.raises(ConfigError, match="red.png is not a folder"):
        image_folder.load_image_folder(params.model_copy(update={"path": str(tmp_path / "cats/red.png")}))
    (tmp_path / "cats/bad.png").write_bytes((tmp_path / "cats/red.png").read_bytes()[:40])
    with pytest.raises(ConfigError, match="bad.png is not an image that can be decoded"):
        image_folder.load_image_folder(params)


def annotated_folder(folder, names=("a.png", "b.png", "c.png")):
    folder.mkdir(exist_ok=True)
    for shade, name in enumerate(names):
        Image.new("RGB", (6, 6), (shade * 100, 0, 0)).save(folder / name)
    return image_folder.ImageFolderParams(path=str(folder), size=(4, 4), labels="annotations")


def test_boxes_from_a_json_file_are_padded_as_detection_reads_them(tmp_path):
    params = annotated_folder(tmp_path)
    (tmp_path / "annotations.json").write_text(
        '{"a.png": [[0, 0.1, 0.1, 0.5, 0.5]], "b.png": [[1, 0.2, 0.2, 0.6, 0.6], [0, 0, 0, 1, 1]], "c.png": []}')
    x, y = image_folder.load_image_folder(params)
    assert x.shape == (3, 4, 4, 3) and y.shape == (3, 2, 5)
    assert y[0, 1].tolist() == [-1] * 5 and (y[2] == -1).all()  # fewer boxes: rows of -1
    assert np.allclose(x[1, 0, 0, 0], 100 / 255)  # each label stays with its own image
    task = {"name": "detection", "params": {"decoder": "boxes", "boxes": "b", "layout": "yxyx", "scores": "s"}}
    x, y = data.examples(x, y, "data", task)
    assert y.shape == (3, 2, 5)


def test_a_csv_gives_a_row_per_file_or_a_box_per_row(tmp_path):
    params = annotated_folder(tmp_path)
    (tmp_path / "annotations.csv").write_text("file,class\nc.png,2\na.png,0\nb.png,1\n")
    assert image_folder.load_image_folder(params)[1].tolist() == [0, 1, 2]
    (tmp_path / "annotations.csv").write_text("file,class,x1,y1,x2,y2\na.png,0,0.1,0.1,0.5,0.5\n"
                                              "b.png,1,0.2,0.2,0.6,0.6\nb.png,0,0,0,1,1\nc.png,0,0,0,1,1\n")
    assert image_folder.load_image_folder(params)[1].shape == (3, 2, 5)


@pytest.mark.parametrize("text, message", [
    ("file,class\na.png,0\nb.png,1\n", "annotations.csv: c.png has no label"),
    ("file,class\na.png,0\nb.png,1\nc.png,2\nd.png,3\n", "annotations.csv: labels 'd.png', which is no image here"),
    ("file,class\na.png,cat\nb.png,1\nc.png,2\n", "annotations.csv: cannot read it"),
])
def test_a_bad_annotation_file_is_one_line_naming_it(tmp_path, text, message):
    params = annotated_folder(tmp_path)
    (tmp_path / "annotations.csv").write_text(text)
    with pytest.raises(ConfigError, match=message):
        image_folder.load_image_folder(params)


def test_labels_that_do_not_share_a_shape_are_refused(tmp_path):
    params = annotated_folder(tmp_path)
    (tmp_path / "annotations.json").write_text('{"a.png": [1, 2], "b.png": [1, 2, 3], "c.png": "x"}')
    with pytest.raises(ConfigError, match="annotations.json: a label is not a number"):
        image_folder.load_image_folder(params)
    (tmp_path / "annotations.json").write_text('{"a.png": [1, 2], "b.png": [1, 2, 3], "c.png": [1, 2]}')
    with pytest.raises(ConfigError, match="annotations.json: the labels do not share one shape"):
        image_folder.load_image_folder(params)
