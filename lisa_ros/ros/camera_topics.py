"""The subscriptions of one camera input: colour, and depth and camera_info where configured.

Colour (sensor_msgs/Image, or CompressedImage for a ``.../compressed`` transport) and camera_info
keep the newest frame only (:data:`lisa_ros.ros.qos.INPUT_QOS`, depth 1); depth keeps the sensor
QoS's few frames so the one stamped like a colour frame can be found (compressedDepth when the
topic's name says so). Every QoS policy can be overridden by parameters
(``qos_overrides./topic.subscription.*``), as rclcpp's camera drivers allow.
"""
from __future__ import annotations

import functools

from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from lisa_ros.ros import graph
from lisa_ros.ros.cameras import CameraInput
from lisa_ros.ros.parameters import CameraConfig
from lisa_ros.ros.qos import INPUT_QOS, every_policy, fresh


def subscribe(node, camera: CameraConfig, inputs: CameraInput, callback_group) -> list:
    """Subscribe ``inputs``' callbacks on ``node`` to ``camera``'s topics (in ``callback_group``);
    the subscriptions, colour first. ``inputs.describe_silence`` then says, from the graph, why
    colour may not arrive (:func:`lisa_ros.ros.graph.silence_reason`). Raises what rclpy raises
    for an invalid topic name, after destroying the subscriptions already made (a failed
    activate leaves nothing subscribed)."""
    qos = dict(qos_overriding_options=every_policy(), callback_group=callback_group)
    subscriptions = []
    try:
        colour = node.create_subscription(CompressedImage if camera.compressed else Image, camera.image_topic,
                                          inputs.on_color, fresh(INPUT_QOS), **qos)
        subscriptions.append(colour)
        if camera.depth_topic:
            subscriptions.append(node.create_subscription(
                CompressedImage if camera.compressed_depth else Image, camera.depth_topic, inputs.on_depth,
                fresh(qos_profile_sensor_data), **qos))
        if camera.camera_info_topic:
            subscriptions.append(node.create_subscription(
                CameraInfo, camera.camera_info_topic, inputs.on_camera_info, fresh(INPUT_QOS), **qos))
    except Exception:
        for subscription in subscriptions:
            node.destroy_subscription(subscription)
        raise
    inputs.describe_silence = functools.partial(graph.silence_reason, node, colour)
    return subscriptions
