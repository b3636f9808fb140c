"""Launch descriptions of the two nodes (used by benet.launch.py and cahfw.launch.py beside it).

Parameters come from config/<model>.yaml, the one place their defaults live. Launch arguments
left empty change nothing; given ones override that file. Needs only the ROS 2 `launch` and
`launch_ros` packages, not the emotion_perception Python package: `ros2 launch` may run under
another Python than the nodes (a distro's /usr/bin/python3, the nodes in a venv), so the launch
files import this module from their own directory (installed with them in
share/emotion_perception/launch/).
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

# launch argument -> (node parameter, description); per model kind.
PARAMETER_ARGUMENTS = {
    "benet": {
        "backend": ("backend", "auto | tensorrt | onnxruntime | torch"),
        "device": ("device", "auto | cpu | cuda | cuda:N"),
        "model_path": ("model_path", "model file (.pt, .onnx or engine)"),
        "publish_debug_image": ("publish_debug_image", "true | false"),
        "autostart": ("autostart",
                      "true: configure + activate at start; false: wait unconfigured for lifecycle transitions"),
    },
    "cahfw": {
        "backend": ("backend", "auto | tensorrt | onnxruntime | torch"),
        "device": ("device", "auto | cpu | cuda | cuda:N"),
        "model_path": ("model_path", "model file (.pt, .onnx or engine)"),
        "publish_debug_image": ("publish_debug_image", "true | false"),
        "face_detector": ("face_detector", "mtcnn | hog | cnn | auto"),
        "autostart": ("autostart",
                      "true: configure + activate at start; false: wait unconfigured for lifecycle transitions"),
    },
    "expression": {
        "backend": ("backend", "auto | tensorrt | onnxruntime | torch"),
        "device": ("device", "auto | cpu | cuda | cuda:N"),
        "model_path": ("model_path",
                       "model file (.pt, .onnx or engine); empty: the installed face-expression model"),
        "publish_debug_image": ("publish_debug_image", "true | false"),
        "face_detector": ("face_detector", "mtcnn | hog | cnn | auto"),
        "autostart": ("autostart",
                      "true: configure + activate at start; false: wait unconfigured for lifecycle transitions"),
    },
}
BOOLEAN_PARAMETERS = {"publish_debug_image", "autostart"}


def node_launch_description(model_kind: str) -> LaunchDescription:
    node_name = f"{model_kind}_node"
    arguments = PARAMETER_ARGUMENTS[model_kind]

    def make_node(context):
        overrides = {}
        for argument, (parameter, _) in arguments.items():
            value = LaunchConfiguration(argument).perform(context)
            if value != "":
                overrides[parameter] = (value.lower() in ("true", "1", "yes")
                                        if parameter in BOOLEAN_PARAMETERS else value)
        return [Node(
            package="emotion_perception",
            executable=node_name,
            name=node_name,
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[
                ("image", LaunchConfiguration("image_topic")),
                ("image/compressed", [LaunchConfiguration("image_topic"), "/compressed"]),
            ],
            output="screen",
            emulate_tty=True,
        )]

    return LaunchDescription([
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="camera topic (sensor_msgs/Image; '<topic>/compressed' "
                                          "with input_transport compressed)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("emotion_perception"), "config",
                                                                  f"{model_kind}.yaml"]),
                              description="parameters YAML"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        *(DeclareLaunchArgument(argument, default_value="", description=f"{text} (empty: the params file's value)")
          for argument, (_, text) in arguments.items()),
        OpaqueFunction(function=make_node),
    ])
