"""ros2 launch emotion_perception benet.launch.py [image_topic:=/camera/image_raw] [params_file:=...]
[namespace:=...] [backend:=...] [device:=...] [model_path:=...] [publish_debug_image:=true]

Starts benet_node with config/benet.yaml; see emotion_perception/ros/launch_description.py.
"""

from emotion_perception.ros.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description("benet")
