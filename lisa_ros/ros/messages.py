"""Building the node's output messages from an engine answer. One place for message layout.

Every output carries the source image's header untouched (stamp and frame_id), so results line up
with the frame, its depth and TF at that instant.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
from geometry_msgs.msg import Point, PoseStamped, Vector3
from sensor_msgs.msg import Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from lisa_ros.geometry import NO_GEOMETRY, Intrinsics, MaskGeometry, mask_geometry
from lisa_ros.transforms import Transform
from lisa_ros.msg import SegmentationResult, StageTimings
from lisa_ros.ros.conversions import numpy_to_image
from lisa_ros.visualization import PALETTE, draw_overlay

MARKER_NAMESPACE = "lisa_ros"
# The timed stages of a request, in message order: the fields of msg/StageTimings.msg (total,
# queue_wait, preprocess, image_encoding, generation, mask_decoding, postprocess), in seconds.
STAGES: tuple[str, ...] = tuple(StageTimings.get_fields_and_field_types())


def region_of_interest(box: tuple[int, int, int, int]) -> RegionOfInterest:
    x, y, w, h = box
    return RegionOfInterest(x_offset=int(x), y_offset=int(y), width=int(w), height=int(h), do_rectify=False)


def point(values: tuple[float, float, float]) -> Point:
    return Point(x=float(values[0]), y=float(values[1]), z=float(values[2]))


def geometry(mask: np.ndarray, depth_m: np.ndarray | None, intrinsics: Intrinsics | None) -> MaskGeometry:
    """3D geometry of an ``(H, W)`` bool mask from ``(H, W)`` depth in metres (registered to the
    mask's image) and the colour intrinsics; NaN geometry when depth or intrinsics are missing."""
    if depth_m is None or intrinsics is None:
        return NO_GEOMETRY
    return mask_geometry(mask, depth_m, intrinsics)


def public_session_id(session_id: str) -> str:
    """What ``~/result`` shows of a session id: ``sha256:`` and 16 hex digits of its digest, so
    subscribers can group a conversation's turns but cannot continue it (only the client that
    made the request got the id itself). "" stays ""."""
    return "sha256:" + hashlib.sha256(session_id.encode()).hexdigest()[:16] if session_id else ""


def segmentation_result(header, answer, session_id: str, masks: list[Image], shapes: list[MaskGeometry],
                        image_size: tuple[int, int], depth_header=None,
                        intrinsics: Intrinsics | None = None) -> SegmentationResult:
    """The SegmentationResult message of one answered request (timings filled by the caller;
    target_poses and point_cloud by :func:`add_target_frame` and :func:`point_cloud`).

    ``masks``: the mono8 Image of each of ``answer.masks`` and ``shapes`` their geometry, in the
    same order, built once by the caller (lisa_ros.ros.outputs) and shared with the feedback;
    ``image_size``: (height, width) of the source image; ``depth_header``: the header of the depth image used (None: no depth); ``intrinsics``: those
    the geometry used, at the source image's size (None: none).
    """
    result = SegmentationResult()
    result.header = header
    result.command = answer.command
    result.answer = answer.text
    result.explanation = answer.explanation
    result.session_id = session_id
    result.masks = list(masks)
    result.scores = [float(m.score) for m in answer.masks]
    result.boxes = [region_of_interest(m.box) for m in answer.masks]
    result.centroids = [point(g.centroid) for g in shapes]
    result.poses = [pose(header, g.centroid, g.orientation) for g in shapes]
    result.extents = [Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2])) for v in (g.principal_extent for g in shapes)]
    result.valid_points = [int(g.valid_points) for g in shapes]
    result.instance_labels = instance_labels(header, [m.mask for m in answer.masks], image_size)
    if depth_header is not None:
        result.depth_header = depth_header
    if intrinsics is not None:
        at_size = intrinsics.scaled_to(image_size[1], image_size[0])
        result.intrinsics = [at_size.fx, at_size.fy, at_size.cx, at_size.cy]
    result.warnings = list(answer.warnings)
    result.generated_tokens = answer.generated_tokens
    return result


def pose(header, position, orientation_wxyz, frame_id: str | None = None) -> PoseStamped:
    """A PoseStamped from a position ``(x, y, z)`` and a quaternion ``(w, x, y, z)``."""
    stamped = PoseStamped()
    stamped.header = Header(stamp=header.stamp, frame_id=header.frame_id if frame_id is None else frame_id)
    stamped.pose.position = point(position)
    w, x, y, z = (float(v) for v in orientation_wxyz)
    stamped.pose.orientation.w, stamped.pose.orientation.x = w, x
    stamped.pose.orientation.y, stamped.pose.orientation.z = y, z
    return stamped


def instance_labels(header, masks: list[np.ndarray], size: tuple[int, int]) -> Image:
    """16UC1 label image of ``size`` (height, width): 0 background, i for masks[i - 1]; the
    earlier mask keeps overlapping pixels (all 0 without masks)."""
    labels = np.zeros(size, np.uint16)
    for index in range(len(masks), 0, -1):  # last first, so earlier masks overwrite overlaps
        labels[masks[index - 1]] = index
    return numpy_to_image(labels, "16UC1", header)


def add_target_frame(result: SegmentationResult, shapes: list[MaskGeometry], target_frame: str,
                     target_from_optical: Transform) -> None:
    """Fill ``result.target_poses``: each shape's pose mapped into ``target_frame`` by
    ``target_from_optical`` (a shape without 3D keeps NaN position and identity orientation)."""
    result.target_poses = [
        pose(result.header, target_from_optical.apply(np.array(g.centroid)),
             target_from_optical.rotate(np.array(g.orientation)), frame_id=target_frame) if g.is_valid else
        pose(result.header, g.centroid, g.orientation, frame_id=target_frame)
        for g in shapes]


# PointCloud2 layout of result.point_cloud: x, y, z float32 metres and the 1-based mask label.
def cloud_fields() -> list[PointField]:
    """The fields of :data:`CLOUD_DTYPE` (a new list per message: messages are mutable)."""
    return [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
            PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
            PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
            PointField(name="label", offset=12, datatype=PointField.UINT16, count=1)]


CLOUD_DTYPE = np.dtype({"names": ["x", "y", "z", "label"], "formats": ["<f4", "<f4", "<f4", "<u2"],
                        "offsets": [0, 4, 8, 12], "itemsize": 16})


def point_cloud(header, shapes: list[MaskGeometry], transform: Transform | None = None,
                frame_id: str | None = None) -> PointCloud2:
    """The object points of every shape as one unorganised PointCloud2 (:func:`cloud_fields`,
    little-endian), mapped by ``transform`` into ``frame_id`` when given (else optical frame)."""
    total = sum(len(g.points) for g in shapes)
    cloud = np.zeros(total, CLOUD_DTYPE)
    start = 0
    for label, shape in enumerate(shapes, start=1):
        points = shape.points if transform is None else transform.apply(shape.points)
        end = start + len(points)
        cloud["x"][start:end], cloud["y"][start:end], cloud["z"][start:end] = points.T
        cloud["label"][start:end] = label
        start = end
    message = PointCloud2(height=1, width=total, fields=cloud_fields(), is_bigendian=False,
                          point_step=CLOUD_DTYPE.itemsize, row_step=CLOUD_DTYPE.itemsize * total, is_dense=True)
    message.header = Header(stamp=header.stamp, frame_id=header.frame_id if frame_id is None else frame_id)
    message.data = cloud.tobytes()
    return message


def _colour(index: int, alpha: float) -> ColorRGBA:
    r, g, b = PALETTE[index % len(PALETTE)]
    return ColorRGBA(r=r / 255, g=g / 255, b=b / 255, a=alpha)


def markers(header, shapes: list[MaskGeometry], labels: list[str]) -> MarkerArray:
    """rviz markers: per mask a sphere at the centroid, a box of its extent along its principal
    axes (the result's pose and extents) and a text label.

    The array starts with a DELETEALL in our namespace and the markers have no lifetime: each
    result replaces the previous one exactly (no blinking from short lifetimes, no lingering
    markers from an earlier answer with more masks).
    """
    array = MarkerArray()
    clear = Marker(action=Marker.DELETEALL, ns=MARKER_NAMESPACE)
    clear.header = header
    array.markers.append(clear)
    for index, (shape, label) in enumerate(zip(shapes, labels)):
        if not shape.is_valid:
            continue
        centre = point(shape.centroid)
        sphere = Marker(ns=MARKER_NAMESPACE, id=3 * index, type=Marker.SPHERE, action=Marker.ADD)
        sphere.header = header
        sphere.pose.position = centre
        sphere.pose.orientation.w = 1.0
        sphere.scale.x = sphere.scale.y = sphere.scale.z = 0.05
        sphere.color = _colour(index, 1.0)
        extent = Marker(ns=MARKER_NAMESPACE, id=3 * index + 1, type=Marker.CUBE, action=Marker.ADD)
        extent.header = header
        extent.pose = pose(header, shape.centroid, shape.orientation).pose
        extent.scale.x, extent.scale.y, extent.scale.z = (max(0.01, v) for v in shape.principal_extent)
        extent.color = _colour(index, 0.35)
        text = Marker(ns=MARKER_NAMESPACE, id=3 * index + 2, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.header = header
        text.pose.position = Point(x=centre.x, y=centre.y - shape.extent[1] / 2 - 0.05, z=centre.z)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.06
        text.color = _colour(index, 1.0)
        text.text = label
        array.markers.extend([sphere, extent, text])
    return array


def debug_image(header, rgb: np.ndarray, answer) -> Image:
    """The source image with the masks, boxes, scores and answer drawn on it (rgb8)."""
    overlay = draw_overlay(rgb, [m.mask for m in answer.masks], [m.box for m in answer.masks],
                           [m.score for m in answer.masks], answer.text)
    return numpy_to_image(overlay, "rgb8", header)


def nan_point() -> Point:
    return Point(x=math.nan, y=math.nan, z=math.nan)
