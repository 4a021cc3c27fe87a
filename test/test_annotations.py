"""Annotations of recorded frames (lisa_ros/evaluate/annotations.py) and the score of a replay
against them (lisa_ros/evaluate/recorded.py): both formats read back what was written, every
malformed input is one DataError, and the figures are LISA's gIoU / cIoU over answered frames."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from lisa_ros.errors import DataError
from lisa_ros.evaluate.annotations import read_annotations, stamp_from_name
from lisa_ros.evaluate.recorded import RecordedScore

H, W = 24, 32


def _box(x0, y0, x1, y1) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_file_names_spell_stamps_in_the_three_forms():
    assert stamp_from_name("5.300000000.png") == 5_300_000_000
    assert stamp_from_name("5.3.png") == 5_300_000_000
    assert stamp_from_name("1700000000_25.png") == 1_700_000_000_000_000_025
    assert stamp_from_name("5300000000.png") == 5_300_000_000
    assert stamp_from_name("frame_0001.png") is None
    assert stamp_from_name("5.3.2.png") is None


def test_a_folder_of_png_masks_reads_back_by_stamp(tmp_path):
    cv2.imwrite(str(tmp_path / "5.300000000.png"), _box(2, 3, 10, 9).astype(np.uint8) * 255)
    cv2.imwrite(str(tmp_path / "5_400000000.png"), _box(4, 4, 6, 6).astype(np.uint8))  # a 0/1 mask
    cv2.imwrite(str(tmp_path / "5500000000.png"), np.zeros((H, W), np.uint8))  # the target is not there
    (tmp_path / "notes.txt").write_text("ignored")
    found = read_annotations(tmp_path)
    assert sorted(found) == [5_300_000_000, 5_400_000_000, 5_500_000_000]
    assert np.array_equal(found[5_300_000_000].union, _box(2, 3, 10, 9))
    assert np.array_equal(found[5_400_000_000].union, _box(4, 4, 6, 6))
    assert found[5_500_000_000].targets == [] and found[5_500_000_000].size == (H, W)


def test_a_coco_file_reads_rle_uncompressed_rle_and_polygons(tmp_path):
    first, second = _box(1, 1, 8, 8), _box(20, 10, 30, 20)
    compressed = coco_mask.encode(np.asfortranarray(first.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode("ascii")
    column = second.T.reshape(-1).astype(int)  # COCO runs go down the columns, starting with zeros
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, column, -1]) != 0)).tolist()
    if column[0]:
        runs = [0, *runs]
    coco = {"images": [{"id": 1, "width": W, "height": H, "stamp": {"sec": 5, "nanosec": 300_000_000}},
                       {"id": 2, "width": W, "height": H, "stamp": 5.4},
                       {"id": 3, "width": W, "height": H, "file_name": "frames/5.500000000.jpg"},
                       {"id": 4, "width": W, "height": H, "stamp": 5.6}],
            "annotations": [{"image_id": 1, "segmentation": compressed},
                            {"image_id": 1, "segmentation": {"size": [H, W], "counts": runs}},
                            {"image_id": 2, "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]},
                            {"image_id": 3, "segmentation": {"size": [H, W], "counts": runs}}]}
    path = tmp_path / "masks.json"
    path.write_text(json.dumps(coco))
    found = read_annotations(path)
    assert sorted(found) == [5_300_000_000, 5_400_000_000, 5_500_000_000, 5_600_000_000]
    assert len(found[5_300_000_000].targets) == 2
    assert np.array_equal(found[5_300_000_000].targets[0], first)
    assert np.array_equal(found[5_300_000_000].targets[1], second)
    polygon = found[5_400_000_000].union
    assert polygon[5, 5] and not polygon[20, 20] and 80 <= polygon.sum() <= 130  # a 10 x 10 square
    assert np.array_equal(found[5_500_000_000].union, second)
    assert found[5_600_000_000].targets == []  # an image without annotations: the target is absent


@pytest.mark.parametrize("case, expected", [
    ("missing", "do not exist"),
    ("empty folder", "holds no .png mask"),
    ("bad name", "the name is not a stamp"),
    ("colour png", "has 3 channels"),
    ("broken png", "cannot be read as a PNG"),
    ("same stamp", "are for the same stamp"),
    ("not json", "are not JSON"),
    ("not coco", "not COCO-shaped"),
    ("no stamp", "gives no stamp"),
    ("unknown image", "is not an image"),
    ("wrong size", "is not the image's"),
    ("bad counts", "neither a COCO string nor a list"),
    ("short counts", "RLE counts cover 10 pixels, the image 768"),
    ("short string", "RLE counts cover"),
    ("cut string", "ends in the middle of a count"),
    ("no annotation", "hold no annotated frame"),
])
def test_malformed_annotations_are_one_clear_data_error_each(tmp_path, case, expected):
    path = tmp_path / "a"
    image = {"id": 1, "width": W, "height": H, "stamp": 1.0}
    if case == "missing":
        pass
    elif case in ("empty folder", "bad name", "colour png", "broken png", "same stamp"):
        path.mkdir()
        if case == "bad name":
            cv2.imwrite(str(path / "frame_1.png"), np.zeros((H, W), np.uint8))
        elif case == "colour png":
            cv2.imwrite(str(path / "1.0.png"), np.zeros((H, W, 3), np.uint8))
        elif case == "broken png":
            (path / "1.0.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        elif case == "same stamp":
            cv2.imwrite(str(path / "1.5.png"), np.zeros((H, W), np.uint8))
            cv2.imwrite(str(path / "1_500000000.png"), np.zeros((H, W), np.uint8))
    else:
        path = tmp_path / "a.json"
        content = {
            "not json": "{images: [",
            "not coco": json.dumps([1, 2]),
            "no stamp": json.dumps({"images": [{"id": 1, "width": W, "height": H}], "annotations": []}),
            "unknown image": json.dumps({"images": [image], "annotations": [{"image_id": 7, "segmentation": []}]}),
            "wrong size": json.dumps({"images": [image], "annotations": [
                {"image_id": 1, "segmentation": {"size": [H + 1, W], "counts": [5, 5]}}]}),
            "bad counts": json.dumps({"images": [image], "annotations": [
                {"image_id": 1, "segmentation": {"size": [H, W], "counts": {"not": "counts"}}}]}),
            "no annotation": json.dumps({"images": [], "annotations": []}),
            "short counts": json.dumps({"images": [image], "annotations": [
                {"image_id": 1, "segmentation": {"size": [H, W], "counts": [5, 5]}}]}),
            "short string": json.dumps({"images": [image], "annotations": [
                {"image_id": 1, "segmentation": {"size": [H, W], "counts": "52"}}]}),
            "cut string": json.dumps({"images": [image], "annotations": [
                {"image_id": 1, "segmentation": {"size": [H, W], "counts": "5o"}}]}),
        }[case]
        path.write_text(content)
    with pytest.raises(DataError, match=expected):
        read_annotations(path)


def test_rle_strings_read_as_pycocotools_writes_them():
    from lisa_ros.evaluate.annotations import rle_string_counts

    rng = np.random.default_rng(3)
    for _ in range(50):
        mask = rng.random((H, W)) < rng.uniform(0.05, 0.95)
        encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        column = mask.T.reshape(-1).astype(int)
        runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, column, -1]) != 0)).tolist()
        assert rle_string_counts(encoded["counts"].decode("ascii")) == ([0, *runs] if column[0] else runs)


def _score() -> RecordedScore:
    from lisa_ros.evaluate.annotations import FrameAnnotation

    one, two = _box(0, 0, 10, 10), _box(20, 0, 30, 10)
    return RecordedScore({
        1_000_000_000: FrameAnnotation(1_000_000_000, [one], (H, W), "1.0.png"),
        1_100_000_000: FrameAnnotation(1_100_000_000, [one, two], (H, W), "1.1.png"),
        1_200_000_000: FrameAnnotation(1_200_000_000, [], (H, W), "1.2.png"),
        1_300_000_000: FrameAnnotation(1_300_000_000, [one], (H, W), "1.3.png"),
        1_400_000_000: FrameAnnotation(1_400_000_000, [one], (H, W), "1.4.png"),
        9_000_000_000: FrameAnnotation(9_000_000_000, [one], (H, W), "9.0.png"),
    })


def test_a_replay_is_scored_by_stamp_with_lisa_metrics_and_every_frame_accounted_for(tmp_path):
    score = _score()
    assert score.annotated_stamp(1_000_400_000) == 1_000_000_000  # within 1 ms
    assert score.annotated_stamp(1_002_000_000) is None
    for stamp in (1_000_400_000, 1_100_000_000, 1_200_000_000, 1_300_000_000, 1_400_000_000):
        score.seen(stamp)
    half = _box(0, 0, 5, 10)  # half of `one`: IoU 0.5
    score.answered(1_000_400_000, [half])
    score.answered(1_100_000_000, [_box(20, 0, 30, 10), _box(0, 0, 10, 10), _box(12, 12, 14, 14)])
    score.answered(1_200_000_000, [half, np.zeros((H, W), bool)])  # a mask where the target is absent: IoU 0,
    # a false mask; the empty one is no mask
    score.refused(1_300_000_000, "INVALID_IMAGE: 7 bytes short")
    score.answered(5_000_000_000, [half])  # not annotated: ignored
    report = score.report()
    overall = report["overall"]
    assert (overall["annotated_frames"], overall["answered"], overall["refused"], overall["not_asked"],
            overall["not_in_bag"]) == (6, 3, 1, 1, 1)
    ious = [f["iou"] for f in report["frames"][:3]]
    assert ious[0] == pytest.approx(0.5, abs=1e-4) and ious[1] == pytest.approx(200 / 204, abs=1e-4) and ious[2] == 0
    assert overall["giou"] == pytest.approx(np.mean(ious))
    assert overall["ciou"] == pytest.approx((50 + 200) / (100 + 204 + 50))
    assert overall["false_masks"] == 1 and overall["target_absent_frames"] == 1 and report["frames"][2]["masks"] == 1
    several = overall["several_targets"]
    assert several["frames"] == 1 and several["mean_matched_iou"] == pytest.approx(1.0, abs=1e-4)
    assert several["missing_masks"] == 0 and several["extra_masks"] == 1
    assert report["frames"][3]["reason"].startswith("INVALID_IMAGE")
    assert "gIoU 0.493" in score.text() and "1 not in the bag" in score.text()

    folder = score.write(tmp_path / "score")
    assert json.loads((folder / "score.json").read_text())["overall"] == json.loads(json.dumps(overall))
    rows = (folder / "frames.csv").read_text().splitlines()
    assert rows[0].startswith("stamp,") and len(rows) == 7 and rows[4].split(",")[2] == "refused"
    plot = cv2.imread(str(folder / "iou.png"))
    assert plot is not None and plot.shape[:2] == (320, 900) and (plot < 128).any()


def test_a_mask_of_another_size_and_annotations_of_no_frame_are_refused():
    score = _score()
    with pytest.raises(DataError, match="is 32x24, the frame 16x12"):
        score.answered(1_000_000_000, [np.ones((12, 16), bool)])
    with pytest.raises(DataError, match="none of the 6 annotations .* is for a frame of the bag: its colour frames "
                                        "are stamped 20.000 to 21.000 s"):
        score.check_found(20_000_000_000, 21_000_000_000)
    score.seen(9_000_000_000)
    score.check_found(20_000_000_000, 21_000_000_000)  # one is: no error
