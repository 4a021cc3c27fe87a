"""Launch the lisa_ros node (lifecycle; configures and activates itself unless autostart is off).

    ros2 launch lisa_ros lisa_ros.launch.py          (the embedded model: small, works offline, CPU is fine)
    ros2 launch lisa_ros lisa_ros.launch.py model:=xinlai/LISA-7B-v1 quantization:=4bit \
        image_topic:=/camera/color/image_raw depth_topic:=/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/color/camera_info rviz:=true

Then: ros2 service call /lisa_ros/reason_segment lisa_ros/srv/ReasonSegment "{command: 'what should I use to reach the shelf?'}"
or:   lisa-ros ask "what should I use to reach the shelf?" --action
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from lisa_ros.model.options import PRECISION_CHOICES, QUANTIZATION_CHOICES  # light: no torch

CONFIG = PathJoinSubstitution([FindPackageShare("lisa_ros"), "config"])


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument("model", default_value="embedded",
                              description="LISA checkpoint folder or hub id (xinlai/LISA-7B-v1 with quantization:=4bit "
                                          "on a GPU); 'embedded' = the small offline model shipped with lisa_ros"),
        DeclareLaunchArgument("vision_tower", default_value="",
                              description="CLIP tower folder or hub id ('' = from the checkpoint's config.json)"),
        DeclareLaunchArgument("quantization", default_value="none", choices=list(QUANTIZATION_CHOICES),
                              description="bitsandbytes quantization of the language model (SAM stays 16-bit); "
                                          "4bit runs LISA-7B in about 5 GB of GPU memory"),
        DeclareLaunchArgument("precision", default_value="auto", choices=list(PRECISION_CHOICES),
                              description="compute precision (auto: fp16 when quantized on CUDA)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([CONFIG, "lisa_ros.yaml"]),
                              description="YAML parameters file (cameras, limits, ...); the model, precision, "
                                          "device, topic and debug arguments of this launch file override it"),
        DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false"],
                              description="configure and activate at start; false = wait for a lifecycle manager"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("image_topic", default_value="/camera/color/image_raw",
                              description="colour image topic of the default camera"),
        DeclareLaunchArgument("depth_topic", default_value="/camera/aligned_depth_to_color/image_raw",
                              description="registered depth topic ('' = no 3D)"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/color/camera_info",
                              description="CameraInfo of the colour camera ('' = no 3D)"),
        DeclareLaunchArgument("debug", default_value="true", choices=["true", "false"],
                              description="publish ~/debug_image and ~/markers"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="start rviz2 with config/lisa_ros.rviz"),
        DeclareLaunchArgument("dds_profile",
                              default_value=EnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                                                                default_value=PathJoinSubstitution([CONFIG, "fastdds.xml"])),
                              description="Fast DDS profile: yours if FASTDDS_DEFAULT_PROFILES_FILE is set, else "
                                          "config/fastdds.xml (large shared-memory segment for camera images)"),
    ]
    node = LifecycleNode(
        package="lisa_ros",
        executable="lisa_ros_node",
        name="lisa_ros",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model": LaunchConfiguration("model"),
                "vision_tower": LaunchConfiguration("vision_tower"),
                "quantization": LaunchConfiguration("quantization"),
                "precision": LaunchConfiguration("precision"),
                "device": LaunchConfiguration("device"),
                "camera.image_topic": LaunchConfiguration("image_topic"),
                "camera.depth_topic": LaunchConfiguration("depth_topic"),
                "camera.camera_info_topic": LaunchConfiguration("camera_info_topic"),
                "publish_debug_image": LaunchConfiguration("debug"),
                "publish_markers": LaunchConfiguration("debug"),
                "autostart": LaunchConfiguration("autostart"),
            },
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", PathJoinSubstitution([CONFIG, "lisa_ros.rviz"])],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(arguments + [
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("dds_profile")),
        node,
        rviz,
    ])
