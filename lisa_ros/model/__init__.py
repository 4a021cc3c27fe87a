"""The ROS-free LISA core: configuration, modules, loading, preprocessing. Never imports rclpy."""
