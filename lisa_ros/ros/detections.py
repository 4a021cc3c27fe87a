"""The standard detection outputs: a SegmentationResult as vision_msgs Detection2DArray and
Detection3DArray, for robot stacks that consume vision_msgs (yolo_ros, Isaac ROS, planners).

One detection per segmented object, ``id`` = the object's id as a decimal string (the same number
as ``SegmentedObject.id`` and the ``label`` of ~/points), one hypothesis: ``class_id`` = the
object's label (the answer's words naming it; "" when it names none), ``score`` = the mask's score.

vision_msgs is not on PyPI: ``make install`` builds its interfaces from ``interfaces/vision_msgs``
(type hashes equal to vision_msgs 4.1.x) where no ROS 2 install provides them.
"""
from __future__ import annotations

from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D,
    BoundingBox3D,
    Detection2D,
    Detection2DArray,
    Detection3D,
    Detection3DArray,
    ObjectHypothesisWithPose,
)


def _hypothesis(obj, pose) -> ObjectHypothesisWithPose:
    """The object's one class hypothesis, with ``pose`` (geometry_msgs/Pose) as its pose."""
    hypothesis = ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id = obj.label
    hypothesis.hypothesis.score = float(obj.score)
    hypothesis.pose.pose = pose
    return hypothesis


def detections_2d(result) -> Detection2DArray:
    """Each object's box in the source image (header = the source image's). The box centre is in
    continuous pixel coordinates (pixel i spans [i, i + 1)): ``x_offset + width / 2``; size =
    width and height in pixels. The hypothesis pose is the object's pose in the optical frame
    (NaN position without 3D)."""
    array = Detection2DArray(header=result.header)
    for obj in result.objects:
        box = BoundingBox2D(size_x=float(obj.box.width), size_y=float(obj.box.height))
        box.center.position.x = obj.box.x_offset + obj.box.width / 2.0
        box.center.position.y = obj.box.y_offset + obj.box.height / 2.0
        array.detections.append(Detection2D(header=result.header, results=[_hypothesis(obj, obj.pose.pose)],
                                            bbox=box, id=str(obj.id)))
    return array


def detections_3d(result) -> Detection3DArray:
    """Each object with 3D as an oriented box: centre and orientation = its pose, size = its extent
    (metres along the pose's axes). In the result's target frame when TF answered (every object
    with 3D then has a target pose), else in the source camera's optical frame; the stamp is the
    image's either way. Objects without 3D (no depth) are left out."""
    objects = [obj for obj in result.objects if obj.valid_points > 0]
    in_target = bool(objects) and all(obj.target_pose.header.frame_id for obj in objects)
    header = Header(stamp=result.header.stamp,
                    frame_id=objects[0].target_pose.header.frame_id if in_target else result.header.frame_id)
    array = Detection3DArray(header=header)
    for obj in objects:
        pose = (obj.target_pose if in_target else obj.pose).pose
        box = BoundingBox3D(center=pose, size=obj.extent)
        array.detections.append(Detection3D(header=header, results=[_hypothesis(obj, pose)], bbox=box, id=str(obj.id)))
    return array
