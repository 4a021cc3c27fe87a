"""The ROS 2 layer: conversions, message building and (later) the node. Imports rclpy/messages."""
