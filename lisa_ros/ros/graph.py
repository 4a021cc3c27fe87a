"""What the ROS graph says about a camera topic that brings no frames: why a camera is silent.

A node that receives nothing cannot tell a wrong topic name from a camera that is off or a QoS
that does not match, but the graph can: :func:`silence_reason` names the topic as resolved (with
the node's namespace and remappings), the publishers on it, their types, and each publisher whose
QoS cannot reach the subscription (rclpy's own compatibility check: e.g. a best-effort publisher
and a reliable subscription, or a volatile publisher and a transient-local subscription). With no
publisher, it lists the topics of the same type (realsense-ros 4.x publishes
``/camera/camera/color/image_raw``, not ``/camera/color/image_raw``).
"""
from __future__ import annotations

from rclpy.qos import QoSCompatibility, qos_check_compatible

# Topics of the same type listed at most in a reason (a large graph has hundreds).
MAX_LISTED_TOPICS = 5


def _qos_words(qos) -> str:
    return f"{qos.reliability.name.lower()}, {qos.durability.name.lower()}"


def silence_reason(node, subscription) -> str:
    """Why ``subscription`` (an rclpy Subscription of ``node``) may have received nothing: one
    sentence for a NO_FRAME answer and the camera's diagnostics. Never raises (a graph query
    that fails gives a general hint)."""
    try:
        topic = subscription.topic_name
        wanted = subscription.msg_type.__module__.split(".")[0] + "/msg/" + subscription.msg_type.__name__
        publishers = node.get_publishers_info_by_topic(topic)
        if not publishers:
            same_type = sorted(name for name, types in node.get_topic_names_and_types()
                               if wanted in types and node.count_publishers(name) > 0)
            listed = ", ".join(same_type[:MAX_LISTED_TOPICS]) + (", ..." if len(same_type) > MAX_LISTED_TOPICS else "")
            return (f"no publisher on {topic} ({wanted}); "
                    + (f"topics of that type: {listed}" if same_type else f"no topic of type {wanted} is published")
                    + " (check the <camera>.image_topic parameter, the namespace and remappings)")
        problems = []
        for info in publishers:
            if info.topic_type != wanted:
                problems.append(f"{info.node_namespace.rstrip('/')}/{info.node_name} publishes {info.topic_type}")
                continue
            compatibility, reason = qos_check_compatible(info.qos_profile, subscription.qos_profile)
            if compatibility == QoSCompatibility.ERROR:
                problems.append(f"{info.node_namespace.rstrip('/')}/{info.node_name} offers QoS "
                                f"{_qos_words(info.qos_profile)}, incompatible with this node's "
                                f"{_qos_words(subscription.qos_profile)} ({reason.strip()}; see qos_overrides)")
        count = f"{len(publishers)} publisher(s) on {topic}"
        if problems:
            return f"{count}, but {'; '.join(problems)}"
        return f"{count} with compatible QoS, but no frame has arrived (is the camera streaming?)"
    except Exception as exc:  # a diagnosis must never fail the request it explains
        return f"check the topic and QoS (the graph could not be read: {type(exc).__name__})"
