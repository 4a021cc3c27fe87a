"""The ROS 2 layer (imports rclpy and the interfaces): image conversions, camera inputs,
parameters, message building, the lifecycle node (node: lifecycle and wiring; serving: queue and
worker; request: one request; outputs: feedback and topics; detections: the vision_msgs outputs;
tf: TF lookups) and the client behind ``lisa-ros ask``.

Imports go downwards only: this package uses lisa_ros.{errors, engine, model, sessions, geometry,
transforms, visualization, resources}, never lisa_ros.{cli, testing, train, evaluate, data}.
"""
