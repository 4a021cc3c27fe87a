"""Building the node's output messages from an engine answer. One place for message layout.

Every output carries the source image's header untouched (stamp and frame_id), so results line up
with the frame, its depth and TF at that instant.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from lisa_ros.geometry import NO_GEOMETRY, Intrinsics, MaskGeometry, mask_geometry
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


def segmentation_result(header, answer, session_id: str, masks: list[Image],
                        shapes: list[MaskGeometry]) -> SegmentationResult:
    """The SegmentationResult message of one answered request (timings filled by the caller).

    ``masks``: the mono8 Image of each of ``answer.masks`` and ``shapes`` their geometry, in the
    same order, built once by the caller (lisa_ros.ros.outputs) and shared with the feedback.
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
    result.generated_tokens = answer.generated_tokens
    return result


def _colour(index: int, alpha: float) -> ColorRGBA:
    r, g, b = PALETTE[index % len(PALETTE)]
    return ColorRGBA(r=r / 255, g=g / 255, b=b / 255, a=alpha)


def markers(header, shapes: list[MaskGeometry], labels: list[str]) -> MarkerArray:
    """rviz markers: per mask a sphere at the centroid, a box of its extent and a text label.

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
        extent.pose.position = centre
        extent.pose.orientation.w = 1.0
        extent.scale.x, extent.scale.y, extent.scale.z = (max(0.01, v) for v in shape.extent)
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
