"""Quality of service of the node's inputs and of its requests, for the node and for its clients.

Inputs (camera topics): best effort, keep last 1 (:data:`INPUT_QOS`). Every policy of an input
subscription can be overridden at start (:func:`every_policy`), e.g. a camera_info published
once and latched needs ``durability: transient_local``.

Requests (the ReasonSegment service and the action's goal, cancel and result services):
reliable, volatile, keep last :data:`REQUEST_HISTORY_DEPTH` (:data:`REQUEST_QOS`). rclpy's
default for services keeps the last 10 samples on each side, so a burst of more than 10 requests
loses its oldest ones without a trace: measured here (issue 13), a client that asked for the
results of 20 goals at once, and then cancelled all 20, never heard back about the first 10 of
either (the node had answered every goal). A client must use the same depth for its side (the
responses it has not yet taken are kept by its reader): :func:`action_qos` for an ActionClient,
``qos_profile=REQUEST_QOS`` for a service client.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

# Sensor-data QoS (best effort) with depth 1: only the newest frame matters, and a busy executor
# should not turn a backlog of stale 1080p frames into Python objects. Overridable per topic.
INPUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                       history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)

# Requests in flight that one side keeps before the oldest is dropped; far above what a queue
# (queue_depth) and its BUSY answers can produce at once. Memory is spent only on requests waiting.
REQUEST_HISTORY_DEPTH = 1000
REQUEST_QOS = QoSProfile(depth=REQUEST_HISTORY_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.VOLATILE)

# How long the action server keeps a finished goal's result for a client that asks late (s).
# rclpy's default is 10 s. Each kept result holds its masks (2 MB per 1080p mask), so 15 minutes
# (rcl's design default) grew the soak's node by hundreds of MB; a minute bounds that.
RESULT_TIMEOUT_S = 60


def action_qos() -> dict[str, QoSProfile]:
    """The keyword arguments that give an ``ActionServer`` or ``ActionClient`` :data:`REQUEST_QOS`
    for its goal, cancel and result services (feedback and status keep rclpy's defaults)."""
    return {"goal_service_qos_profile": REQUEST_QOS, "result_service_qos_profile": REQUEST_QOS,
            "cancel_service_qos_profile": REQUEST_QOS}


def every_policy() -> QoSOverridingOptions:
    """Options that declare a ``qos_overrides.<topic>.<publisher|subscription>.<policy>``
    parameter for every policy the entity has (history, depth, reliability, durability,
    deadline, liveliness, liveliness_lease_duration, and lifespan for a publisher). rclpy's
    ``with_default_policies()`` declares only history, depth and reliability, so an override of
    durability (``transient_local`` for a latched camera_info) would be silently ignored: a
    parameter that is not declared is not read."""
    return QoSOverridingOptions(policy_kinds=[kind for kind in QoSPolicyKind if kind.name not in NOT_OVERRIDABLE])


# QoSPolicyKind members that are not policies to set per topic: INVALID, and (newer rclpy)
# AVOID_ROS_NAMESPACE_CONVENTIONS, which would put the topic outside ROS's name mangling.
NOT_OVERRIDABLE = ("INVALID", "AVOID_ROS_NAMESPACE_CONVENTIONS")


# A QoSProfile's fields, as its constructor takes them.
_PROFILE_FIELDS = ("history", "depth", "reliability", "durability", "lifespan", "deadline", "liveliness",
                   "liveliness_lease_duration", "avoid_ros_namespace_conventions")


def fresh(profile: QoSProfile) -> QoSProfile:
    """A new QoSProfile equal to ``profile``, to create one publisher or subscription with. rclpy
    applies ``qos_overrides`` to the profile object it is given, in place: a profile shared by
    several entities (a module constant, rclpy's ``qos_profile_sensor_data``) would carry one
    topic's overrides to every entity created after it."""
    return QoSProfile(**{name: getattr(profile, name) for name in _PROFILE_FIELDS})
