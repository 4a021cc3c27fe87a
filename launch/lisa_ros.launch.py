"""Launch the lisa_ros node (lifecycle; configures and activates itself unless autostart is off).

    ros2 launch lisa_ros lisa_ros.launch.py          (the embedded model: small, works offline, CPU is fine)
    ros2 launch lisa_ros lisa_ros.launch.py params_file:=my.yaml namespace:=robot1 rviz:=true
    ros2 launch lisa_ros lisa_ros.launch.py model:=xinlai/LISA-7B-v1 quantization:=4bit \
        image_topic:=/camera/color/image_raw remappings:="camera/color/camera_info:=/camera/info"

The parameters file decides; an argument overrides it only when given (every argument that sets a
parameter defaults to "", not given). Topics are relative, so namespace:=robot1 moves the node to
/robot1/lisa_ros and its cameras to /robot1/camera/...; remappings renames any topic. The rules are
in lisa_ros/ros/launching.py (tested without launch, which is not on PyPI).

Then: ros2 service call /lisa_ros/reason_segment lisa_ros/srv/ReasonSegment "{command: 'what should I use to reach the shelf?'}"
or:   lisa-ros ask "what should I use to reach the shelf?" --action [--namespace robot1]
"""
import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from lisa_ros.resources import dds_profile_variables
from lisa_ros.model.options import (  # light: no torch
    PRECISION_CHOICES,
    QUANTIZATION_BACKEND_CHOICES,
    QUANTIZATION_CHOICES,
)
from lisa_ros.ros.launching import (
    ARGUMENT_NAMES,
    LOG_LEVELS,
    NODE_NAME,
    log_level_arguments,
    parameter_overrides,
    parameters_file_values,
    remapping_rules,
    rviz_config,
)

CONFIG = PathJoinSubstitution([FindPackageShare("lisa_ros"), "config"])


def _setup(context):
    arguments = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENT_NAMES}
    namespace = arguments["namespace"].rstrip("/")  # rcl refuses a trailing slash
    params_file = arguments["params_file"]
    file_values = parameters_file_values(params_file, namespace)
    overrides = parameter_overrides(arguments, file_values)
    node = LifecycleNode(
        package="lisa_ros",
        executable="lisa_ros_node",
        name=NODE_NAME,
        namespace=namespace,
        output="screen",
        parameters=[params_file] + ([overrides] if overrides else []),
        remappings=remapping_rules(arguments["remappings"]),
        ros_arguments=log_level_arguments(arguments["log_level"]),
    )
    actions = [node]
    if arguments["rviz"] == "true":
        shipped = PathJoinSubstitution([CONFIG, "lisa_ros.rviz"]).perform(context)
        with open(shipped) as source, tempfile.NamedTemporaryFile(
                "w", prefix="lisa_ros_", suffix=".rviz", delete=False) as target:
            target.write(rviz_config(source.read(), namespace, arguments["fixed_frame"]))
        use_sim_time = overrides.get("use_sim_time", file_values.get("use_sim_time", False))
        actions.append(Node(package="rviz2", executable="rviz2", arguments=["-d", target.name],
                            parameters=[{"use_sim_time": use_sim_time}]))
    return actions


def generate_launch_description():
    arguments = [
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([CONFIG, "lisa_ros.yaml"]),
                              description="YAML parameters file (model, cameras, limits, ...); the arguments "
                                          "below override it only when given"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and of its relative camera topics (robot1 -> "
                                          "/robot1/lisa_ros/..., /robot1/camera/...)"),
        DeclareLaunchArgument("model", default_value="",
                              description="LISA checkpoint folder or hub id (xinlai/LISA-7B-v1 with quantization:=4bit "
                                          "on a GPU); 'embedded' = the small offline model shipped with lisa_ros"
                                          "; parameters file if not given"),
        DeclareLaunchArgument("vision_tower", default_value="",
                              description="CLIP tower folder or hub id; parameters file if not given"),
        DeclareLaunchArgument("quantization", default_value="", choices=[""] + list(QUANTIZATION_CHOICES),
                              description="4bit or 8bit weights for the language model (SAM stays 16-bit); "
                                          "4bit runs LISA-7B in about 5 GB of GPU memory"
                                          "; parameters file if not given"),
        DeclareLaunchArgument("quantization_backend", default_value="", choices=[""] + list(QUANTIZATION_BACKEND_CHOICES),
                              description="bitsandbytes (NF4 / LLM.int8) or torchao (int4 / int8 weight-only: any CUDA "
                                          "device, Jetson included, and the CPU); auto: torchao on aarch64"
                                          "; parameters file if not given"),
        DeclareLaunchArgument("precision", default_value="", choices=[""] + list(PRECISION_CHOICES),
                              description="compute precision (auto: bf16 on CUDA, fp16 when bitsandbytes quantizes; on the CPU bf16 with AMX or AVX512-BF16, else fp32)"
                                          "; parameters file if not given"),
        DeclareLaunchArgument("device", default_value="", description="auto, cpu, cuda or cuda:N"
                                                                      "; parameters file if not given"),
        DeclareLaunchArgument("autostart", default_value="", choices=["", "true", "false"],
                              description="configure and activate at start; false = wait for a lifecycle manager"
                                          "; parameters file if not given"),
        DeclareLaunchArgument("use_sim_time", default_value="", choices=["", "true", "false"],
                              description="take time from /clock (simulation, bag replay)"
                                          "; parameters file if not given"),
        DeclareLaunchArgument("target_frame", default_value="",
                              description="default frame for the objects' target poses, ~/detections_3d and point "
                                          "clouds (odom or map on a moving base), via TF at the image stamp; "
                                          "parameters file if not given"),
        DeclareLaunchArgument("debug", default_value="", choices=["", "true", "false"],
                              description="publish ~/debug_image and ~/markers; parameters file if not given"),
        DeclareLaunchArgument("camera", default_value="",
                              description="the camera the topic arguments below set (default: the first of the "
                                          "parameters file's cameras)"),
        DeclareLaunchArgument("image_topic", default_value="",
                              description="colour image topic of that camera; parameters file if not given"),
        DeclareLaunchArgument("compressed", default_value="", choices=["", "true", "false"],
                              description="true: the image topic is sensor_msgs/CompressedImage"
                                          "; parameters file if not given"),
        DeclareLaunchArgument("depth_topic", default_value="",
                              description="registered depth topic of that camera; parameters file if not given"),
        DeclareLaunchArgument("camera_info_topic", default_value="",
                              description="CameraInfo of that camera's colour image"
                                          "; parameters file if not given"),
        DeclareLaunchArgument("remappings", default_value="",
                              description="topic remappings, 'from:=to;from2:=to2' (e.g. "
                                          "camera/color/image_raw:=/front/image)"),
        DeclareLaunchArgument("log_level", default_value="", choices=[""] + list(LOG_LEVELS),
                              description="the node's log level ('' = info)"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="start rviz2 with config/lisa_ros.rviz, its topics under the namespace"),
        DeclareLaunchArgument("fixed_frame", default_value="",
                              description="rviz fixed frame ('' = camera_color_optical_frame, as in the config)"),
        # Fast DDS 3 (Kilted on) reads FASTDDS_..., Fast DDS 2 (Humble, Jazzy) FASTRTPS_...
        DeclareLaunchArgument("dds_profile",
                              default_value=EnvironmentVariable(
                                  "FASTDDS_DEFAULT_PROFILES_FILE", default_value=EnvironmentVariable(
                                      "FASTRTPS_DEFAULT_PROFILES_FILE",
                                      default_value=PathJoinSubstitution([CONFIG, "fastdds.xml"]))),
                              description="Fast DDS profile: yours if FASTDDS_DEFAULT_PROFILES_FILE (or, before "
                                          "Fast DDS 3, FASTRTPS_DEFAULT_PROFILES_FILE) is set, else "
                                          "config/fastdds.xml (large shared-memory segment for camera images)"),
    ]
    return LaunchDescription(arguments + [
        *[SetEnvironmentVariable(name, LaunchConfiguration("dds_profile"))
          for name in dds_profile_variables("")],  # the name(s) this machine's Fast DDS reads
        OpaqueFunction(function=_setup),
    ])
