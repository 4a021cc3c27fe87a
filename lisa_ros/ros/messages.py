"""Building the node's output messages from an engine answer. One place for message layout.

Every output carries the source image's header untouched (stamp and frame_id), so results line up
with the frame, its depth and TF at that instant.
"""
from __future__ import annotations

import copy
import hashlib

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, PoseStamped, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from lisa_ros.geometry import NO_GEOMETRY, Intrinsics, MaskGeometry, mask_geometry
from lisa_ros.transforms import Transform
from lisa_ros import timing
from lisa_ros.msg import SegmentationResult, SegmentedObject, StageTimings, Status
from lisa_ros.ros.cameras import time_seconds
from lisa_ros.ros.conversions import numpy_to_image
from lisa_ros.visualization import PALETTE, draw_overlay

MARKER_NAMESPACE = "lisa_ros"
# The timed stages of a request, in message order (lisa_ros.timing; test_packaging ties them to
# the fields of msg/StageTimings.msg).
STAGES = timing.STAGES
# The name of each status code (lisa_ros/msg/Status's constants): 0 -> "OK", 12 -> "NO_TARGET", ...
STATUS_NAMES: dict[int, str] = {getattr(Status, name): name for name in dir(Status)
                                if name.isupper() and isinstance(getattr(Status, name), int)}


def duration(seconds: float) -> Duration:
    """builtin_interfaces/Duration of ``seconds`` (>= 0; rounded to the nanosecond)."""
    nanoseconds = max(0, round(seconds * 1e9))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


# Seconds of a builtin_interfaces/Duration: the same fields (sec, nanosec) as a Time.
duration_seconds = time_seconds


def stage_timings(seconds_per_stage: dict[str, float]) -> StageTimings:
    """StageTimings from seconds per stage (:data:`STAGES`; a stage not given is 0)."""
    return StageTimings(**{stage: duration(seconds_per_stage.get(stage, 0.0)) for stage in STAGES})


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


def segmented_object(object_id: int, decoded, mask: Image, shape: MaskGeometry, header,
                     target_frame: str = "", target_from_optical: Transform | None = None) -> SegmentedObject:
    """The SegmentedObject of one decoded mask.

    ``decoded``: the engine's DecodedMask (label, score, box); ``mask``: its mono8 Image;
    ``shape``: its geometry in the optical frame of ``header`` (the source image's);
    ``target_from_optical``: the request's transform into ``target_frame`` (None: no target
    pose). An object without 3D gets no target pose either.
    """
    message = SegmentedObject(id=int(object_id), label=decoded.label, score=float(decoded.score), mask=mask,
                              box=region_of_interest(decoded.box), valid_points=int(shape.valid_points))
    message.pose = pose(header, shape.centroid, shape.orientation)
    message.extent = Vector3(**dict(zip("xyz", (float(v) for v in shape.principal_extent))))
    if target_from_optical is not None and shape.is_valid:
        message.target_pose = target_pose(header, shape, target_frame, target_from_optical)
    return message


def target_pose(header, shape: MaskGeometry, target_frame: str, target_from_optical: Transform) -> PoseStamped:
    """``shape``'s pose (centroid and principal axes, in the optical frame of ``header``) mapped
    into ``target_frame`` by ``target_from_optical``; stamped with the image's stamp."""
    return pose(header, target_from_optical.apply(np.array(shape.centroid)),
                target_from_optical.rotate(np.array(shape.orientation)), frame_id=target_frame)


def segmentation_result(header, answer, session_id: str, objects: list[SegmentedObject], masks: list[np.ndarray],
                        image_size: tuple[int, int], depth_header=None,
                        camera_info: CameraInfo | None = None) -> SegmentationResult:
    """The SegmentationResult of one answered request (status, timings, target frame fields and
    point cloud filled by the caller).

    ``objects``: the SegmentedObject of each of ``answer.masks``, in order, built once by the
    caller (lisa_ros.ros.outputs) and shared with the feedback; ``masks``: their ``(H, W)`` bool
    pixels (for the label image); ``image_size``: (height, width) of the source image;
    ``depth_header``: the header of the depth image used (None: no depth); ``camera_info``: the
    one the 3D used, at the source image's size (None: none).
    """
    result = SegmentationResult()
    result.header = header
    result.command = answer.command
    result.answer = answer.text
    result.explanation = answer.explanation
    result.session_id = session_id
    result.objects = list(objects)
    result.instance_labels = instance_labels(header, masks, image_size)
    if depth_header is not None:
        result.depth_header = depth_header
    if camera_info is not None:
        result.camera_info = camera_info
    result.warnings = list(answer.warnings)
    result.generated_tokens = answer.generated_tokens
    return result


def camera_info_at(info: CameraInfo, width: int, height: int) -> CameraInfo:
    """``info`` for an image of ``width`` x ``height`` (a copy): unchanged at its own size;
    for a resized image, K and P scaled as :meth:`lisa_ros.geometry.Intrinsics.scaled_to` scales
    the intrinsics the 3D used (binning and ROI cleared: the result describes the image itself)."""
    out = copy.deepcopy(info)
    own_width, own_height = info.width or width, info.height or height
    out.width, out.height = width, height
    if (own_width, own_height) == (width, height):
        return out
    k, p = [float(v) for v in info.k], [float(v) for v in info.p]
    if k[0] > 0 and k[4] > 0:
        at = Intrinsics(k[0], k[4], k[2], k[5], own_width, own_height).scaled_to(width, height)
        k[0], k[4], k[2], k[5] = at.fx, at.fy, at.cx, at.cy
    if p[0] > 0 and p[5] > 0:
        at = Intrinsics(p[0], p[5], p[2], p[6], own_width, own_height).scaled_to(width, height)
        p[3], p[7] = p[3] * at.fx / p[0], p[7] * at.fy / p[5]  # Tx = -fx' B and Ty scale with the focal length
        p[0], p[5], p[2], p[6] = at.fx, at.fy, at.cx, at.cy
    out.k, out.p = k, p
    out.binning_x = out.binning_y = 0
    out.roi = RegionOfInterest()
    return out


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


# PointCloud2 layout of ~/points and result.point_cloud: PCL's PointXYZL (x, y, z float32 metres,
# label uint32 = the object's id), little-endian.
CLOUD_DTYPE = np.dtype({"names": ["x", "y", "z", "label"], "formats": ["<f4", "<f4", "<f4", "<u4"],
                        "offsets": [0, 4, 8, 12], "itemsize": 16})
_POINT_FIELD_TYPES = {np.dtype("<f4"): PointField.FLOAT32, np.dtype("<u4"): PointField.UINT32}


def cloud_fields() -> list[PointField]:
    """The PointFields of :data:`CLOUD_DTYPE` (a new list per message: messages are mutable)."""
    return [PointField(name=name, offset=offset, datatype=_POINT_FIELD_TYPES[dtype], count=1)
            for name, (dtype, offset) in CLOUD_DTYPE.fields.items()]


def point_cloud(header, labelled_points: list[tuple[int, np.ndarray]],
                target: tuple[str, Transform] | None = None) -> PointCloud2:
    """The points of every object as one unorganised PointCloud2 (:data:`CLOUD_DTYPE`).
    ``labelled_points``: (object id, ``(N, 3)`` points in the optical frame of ``header``) per
    object; ``target``: (frame, target_from_optical) to map them into (None: the optical frame);
    stamp = the image's."""
    frame_id, transform = target if target is not None else (header.frame_id, None)
    total = sum(len(points) for _, points in labelled_points)
    cloud = np.zeros(total, CLOUD_DTYPE)
    start = 0
    for label, points in labelled_points:
        if transform is not None:
            points = transform.apply(points)
        end = start + len(points)
        cloud["x"][start:end], cloud["y"][start:end], cloud["z"][start:end] = np.asarray(points).T
        cloud["label"][start:end] = label
        start = end
    message = PointCloud2(height=1, width=total, fields=cloud_fields(), is_bigendian=False,
                          point_step=CLOUD_DTYPE.itemsize, row_step=CLOUD_DTYPE.itemsize * total, is_dense=True)
    message.header = Header(stamp=header.stamp, frame_id=frame_id)
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


def debug_overlay(rgb: np.ndarray, answer) -> np.ndarray:
    """``(H, W, 3)`` uint8: the source image with the masks, boxes, scores and answer drawn on it."""
    return draw_overlay(rgb, [m.mask for m in answer.masks], [m.box for m in answer.masks],
                        [m.score for m in answer.masks], answer.text)
