"""lisa_ros.ros.camera_topics: one camera input's subscriptions, in process on a private domain."""
from __future__ import annotations

import pytest

from lisa_ros.ros.cameras import CameraInput
from lisa_ros.ros.parameters import CameraConfig

pytestmark = pytest.mark.ros


def _camera(depth_topic: str, compressed: bool = False) -> CameraConfig:
    return CameraConfig("front", "camera/color/image_raw" + ("/compressed" if compressed else ""), compressed,
                        depth_topic, "camera/color/camera_info", 0.02, 0.001, True, 0.0, "auto")


def test_a_camera_subscribes_colour_depth_and_camera_info_with_their_types(ros_domain):
    import rclpy

    from lisa_ros.ros.camera_topics import subscribe

    node = rclpy.create_node("camera_topics_test", context=ros_domain.context())
    try:
        inputs = CameraInput("front")
        made = subscribe(node, _camera("camera/depth/image_raw/compressedDepth", compressed=True), inputs, None)
        assert [(s.topic_name, s.msg_type.__name__) for s in made] == [
            ("/camera/color/image_raw/compressed", "CompressedImage"),
            ("/camera/depth/image_raw/compressedDepth", "CompressedImage"),
            ("/camera/color/camera_info", "CameraInfo")]
        assert "/camera/color/image_raw/compressed" in inputs.silence_reason()  # from the graph, named as resolved
    finally:
        node.destroy_node()


def test_an_invalid_topic_leaves_no_subscription_behind(ros_domain):
    """The depth topic is invalid: the colour subscription made before it is destroyed, so a
    failed activate leaves nothing feeding the camera input."""
    import rclpy

    from lisa_ros.ros.camera_topics import subscribe

    node = rclpy.create_node("camera_topics_test", context=ros_domain.context())
    try:
        inputs = CameraInput("front")
        with pytest.raises(Exception, match="(?i)invalid"):
            subscribe(node, _camera("camera/depth in//valid"), inputs, None)
        assert list(node.subscriptions) == [] and inputs.describe_silence is None
    finally:
        node.destroy_node()
