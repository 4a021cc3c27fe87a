"""What one request sends out: action feedback while it runs, then the node's output topics.

Each mask is converted to a ``sensor_msgs/Image`` and its 3D geometry computed once per request
(:class:`MaskOutputs`): the action feedback that carries a mask the moment it is decoded, the
SegmentationResult, the rviz markers and the debug image all reuse them. The message layout
itself is :mod:`lisa_ros.ros.messages`; every output carries the source image's header.

Topics (all under the node's ``~/``): ``result`` (SegmentationResult; its ``session_id`` replaced
by :func:`lisa_ros.ros.messages.public_session_id`), ``mask`` (mono8 union of
the masks), ``explanation`` (String), ``markers`` (MarkerArray) with reliable QoS, and
``debug_image`` (rgb8; reliable, keep last 1: one image per answer). Every publisher takes QoS
overrides (``qos_overrides./<ns>/lisa_ros/<topic>.publisher.*`` in the parameters file).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from lisa_ros.action import ReasonSegment as ReasonSegmentAction
from lisa_ros.geometry import Intrinsics, MaskGeometry
from lisa_ros.msg import SegmentationResult
from lisa_ros.ros import messages
from lisa_ros.ros.conversions import mask_to_image

Stage = ReasonSegmentAction.Feedback
FEEDBACK_PERIOD_S = 0.2  # partial-text feedback at most this often (masks are sent at once)


@dataclass(frozen=True)
class MaskOutput:
    """One decoded mask as it goes out: the engine's mask (``decoded.mask`` (H, W) bool, score,
    box), its mono8 Image with the source header, and its 3D geometry in the optical frame."""

    decoded: Any  # lisa_ros.engine.DecodedMask
    image: Image
    geometry: MaskGeometry


class MaskOutputs:
    """Converts each mask of one request once: by :meth:`get` as masks stream in, and by
    :meth:`all` for the finished answer (the masks already converted are reused).

    ``depth_m``: ``(H, W)`` float32 metres registered to the colour image, or None;
    ``intrinsics``: of the colour image, or None (no depth or no intrinsics: NaN geometry).
    """

    def __init__(self, header, depth_m: np.ndarray | None, intrinsics: Intrinsics | None):
        self._header = header
        self._depth_m = depth_m
        self._intrinsics = intrinsics
        self._done: dict[int, MaskOutput] = {}

    def get(self, decoded) -> MaskOutput:
        """``decoded`` (an engine DecodedMask) converted, once per mask index."""
        done = self._done.get(decoded.index)
        if done is None or done.decoded is not decoded:
            done = MaskOutput(decoded, mask_to_image(decoded.mask, self._header),
                              messages.geometry(decoded.mask, self._depth_m, self._intrinsics))
            self._done[decoded.index] = done
        return done

    def all(self, masks: list) -> list[MaskOutput]:
        return [self.get(decoded) for decoded in masks]


class GoalFeedback:
    """The action feedback of one job; for a service request (no goal) every send is a no-op."""

    def __init__(self, goal_handle, received_at: float, period_s: float = FEEDBACK_PERIOD_S):
        self._goal = goal_handle
        self._received_at = received_at  # monotonic seconds
        self._period_s = period_s
        self._last_text = 0.0

    @property
    def streaming(self) -> bool:
        """True for an action goal: masks and text are worth sending as they come."""
        return self._goal is not None

    @property
    def cancel_requested(self) -> bool:
        return self._goal is not None and self._goal.is_cancel_requested

    def _message(self, stage: str):
        feedback = ReasonSegmentAction.Feedback(stage=stage, mask_index=-1)
        feedback.elapsed = time.monotonic() - self._received_at
        feedback.centroid = messages.nan_point()
        return feedback

    def stage(self, stage: str) -> None:
        """A stage change (one of the Feedback STAGE_* constants)."""
        if self._goal is not None:
            self._goal.publish_feedback(self._message(stage))

    def mask(self, output: MaskOutput) -> None:
        """A mask the moment it is decoded (stage decoding_mask), with its score, box and centroid."""
        if self._goal is None:
            return
        feedback = self._message(Stage.STAGE_DECODING_MASK)
        feedback.mask_index, feedback.mask = output.decoded.index, output.image
        feedback.score, feedback.box = float(output.decoded.score), messages.region_of_interest(output.decoded.box)
        feedback.centroid = messages.point(output.geometry.centroid)
        self._goal.publish_feedback(feedback)

    def text(self, partial_answer: str, generated_tokens: int) -> None:
        """The answer so far (stage generating), at most once per ``period_s``."""
        now = time.monotonic()
        if self._goal is not None and now - self._last_text >= self._period_s:
            self._last_text = now
            feedback = self._message(Stage.STAGE_GENERATING)
            feedback.partial_answer, feedback.generated_tokens = partial_answer, generated_tokens
            self._goal.publish_feedback(feedback)


class Publishers:
    """The node's output topics (see the module docstring); created once, with the node."""

    def __init__(self, node):
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        # One image per answer: reliable (a default subscriber gets it; a best-effort one too),
        # and only the newest kept, so a slow subscriber does not hold several frames.
        newest_reliable = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        # Every publisher takes qos_overrides./lisa_ros/<topic>.publisher.* from the parameters.
        overridable = dict(qos_overriding_options=QoSOverridingOptions.with_default_policies())
        self._result = node.create_publisher(SegmentationResult, "~/result", reliable, **overridable)
        self._mask = node.create_publisher(Image, "~/mask", reliable, **overridable)
        self._explanation = node.create_publisher(String, "~/explanation", reliable, **overridable)
        self._debug = node.create_publisher(Image, "~/debug_image", newest_reliable, **overridable)
        self._markers = node.create_publisher(MarkerArray, "~/markers", reliable, **overridable)

    def publish(self, result: SegmentationResult, masks: list[MaskOutput], rgb: np.ndarray, answer,
                debug_image: bool, markers: bool) -> None:
        """One answered request: ``result`` as sent to the client, ``masks`` its converted masks,
        ``rgb`` the ``(H, W, 3)`` uint8 source image, ``answer`` the engine's Answer."""
        header = result.header
        public = copy.copy(result)  # the client's own result keeps the session id itself
        public.session_id = messages.public_session_id(result.session_id)
        self._result.publish(public)
        union = np.zeros(rgb.shape[:2], bool)
        for output in masks:
            union |= output.decoded.mask
        self._mask.publish(mask_to_image(union, header))
        self._explanation.publish(String(data=result.explanation))
        if debug_image:
            self._debug.publish(messages.debug_image(header, rgb, answer))
        if markers:
            labels = [f"#{m.decoded.index} {m.decoded.score:.2f}" for m in masks]
            self._markers.publish(messages.markers(header, [m.geometry for m in masks], labels))
