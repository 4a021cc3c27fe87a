"""The vision_msgs outputs: the interfaces this build provides hash like the released vision_msgs,
and a SegmentationResult becomes Detection2DArray / Detection3DArray as documented.
(Cross-process: test_node.py's test_detections_reach_a_client_that_imports_only_vision_msgs.)"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# RIHS01 type hashes of the released vision_msgs 4.1.1 (ros-perception/vision_msgs, tag 4.1.1, commit
# e77fa2d, the Jazzy and Kilted release), computed by rosbags' hash_rihs01 from the upstream .msg
# files. Detection2DArray's also appears in the project's reference notes, computed independently.
UPSTREAM_TYPE_HASHES = {
    "BoundingBox2D": "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "BoundingBox2DArray": "RIHS01_2464e82838009386d371b523211c21c91d74d313fcdd6788223c531d621cf691",
    "BoundingBox3D": "RIHS01_bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
    "BoundingBox3DArray": "RIHS01_a81938db9576b10c2eecd7c5a5da3eac496efd00221b25ed051dfbc81fb56da6",
    "Classification": "RIHS01_f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143",
    "Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "Detection3D": "RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "Detection3DArray": "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "ObjectHypothesisWithPose": "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "Point2D": "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "Pose2D": "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "VisionInfo": "RIHS01_95d3116a17484ad91c9a2686e1d54890bbfc3ff6c6a2de137738c4950d45d284",
}


def test_our_vision_msgs_definitions_hash_like_the_released_ones():
    """The field lists in interfaces/vision_msgs (hashed from their text by rosbags, independently
    of rosidl) give every upstream type hash: the same messages, no more, no fewer."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    folder = ROOT / "interfaces" / "vision_msgs" / "msg"
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in folder.glob("*.msg"):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    assert {name: store.hash_rihs01(f"vision_msgs/msg/{name}") for name in sorted(p.stem for p in folder.glob("*.msg"))} \
        == UPSTREAM_TYPE_HASHES


def test_the_installed_vision_msgs_has_the_released_type_hashes():
    """The vision_msgs this environment imports (built from interfaces/vision_msgs by `make install`,
    or a ROS 2 install's own) declares the released type hashes in its generated type descriptions,
    the hashes DDS peers compare."""
    import vision_msgs

    share = Path(vision_msgs.__file__).resolve().parents[4] / "share" / "vision_msgs" / "msg"
    declared = {}
    for name in UPSTREAM_TYPE_HASHES:
        hashes = {h["type_name"]: h["hash_string"] for h in json.loads((share / f"{name}.json").read_text())["type_hashes"]}
        declared[name] = hashes[f"vision_msgs/msg/{name}"]
    assert declared == UPSTREAM_TYPE_HASHES


def _result(target: bool):
    """A SegmentationResult with three objects: two with 3D (target poses when ``target``), one without."""
    from lisa_ros.msg import SegmentationResult, SegmentedObject

    result = SegmentationResult()
    result.header.frame_id, result.header.stamp.sec = "cam_optical", 42
    for object_id, label, valid in ((5, "red cup", 100), (6, "", 0), (9, "blue plate", 30)):
        obj = SegmentedObject(id=object_id, label=label, score=0.5 + object_id / 100, valid_points=valid)
        obj.box.x_offset, obj.box.y_offset, obj.box.width, obj.box.height = object_id, 2 * object_id, 10, 20
        obj.pose.header = result.header
        obj.pose.pose.position.x = obj.pose.pose.position.y = obj.pose.pose.position.z = float(object_id) if valid else math.nan
        obj.extent.x, obj.extent.y, obj.extent.z = (0.1, 0.2, 0.3) if valid else (math.nan,) * 3
        if target and valid:
            obj.target_pose.header.frame_id, obj.target_pose.header.stamp = "odom", result.header.stamp
            obj.target_pose.pose.position.x = 100.0 + object_id
        result.objects.append(obj)
    return result


def test_every_object_is_a_2d_detection_with_its_id_label_score_and_box():
    from lisa_ros.ros.detections import detections_2d

    result = _result(target=True)
    array = detections_2d(result)
    assert array.header == result.header and [d.id for d in array.detections] == ["5", "6", "9"]
    first = array.detections[0]
    assert first.header == result.header
    assert (first.results[0].hypothesis.class_id, first.results[0].hypothesis.score) == ("red cup", pytest.approx(0.55))
    assert (first.bbox.center.position.x, first.bbox.center.position.y, first.bbox.size_x, first.bbox.size_y) == (10, 20, 10, 20)
    assert first.results[0].pose.pose.position.z == 5.0  # the optical-frame pose


@pytest.mark.parametrize("target", [True, False])
def test_3d_detections_are_the_objects_with_3d_in_the_target_frame_when_tf_answered(target):
    from lisa_ros.ros.detections import detections_3d

    result = _result(target)
    array = detections_3d(result)
    assert [d.id for d in array.detections] == ["5", "9"]  # object 6 has no 3D
    assert array.header.stamp == result.header.stamp
    assert array.header.frame_id == ("odom" if target else "cam_optical")
    box = array.detections[1].bbox
    assert box.center.position.x == (109.0 if target else 9.0) and (box.size.x, box.size.y, box.size.z) == (0.1, 0.2, 0.3)
    assert array.detections[1].results[0].pose.pose == box.center and array.detections[1].header == array.header


def test_no_objects_are_empty_detection_arrays_with_the_source_header():
    from lisa_ros.msg import SegmentationResult
    from lisa_ros.ros.detections import detections_2d, detections_3d

    result = SegmentationResult()
    result.header.frame_id = "cam_optical"
    assert not detections_2d(result).detections and detections_2d(result).header == result.header
    assert not detections_3d(result).detections and detections_3d(result).header == result.header
