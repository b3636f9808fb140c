"""ros2 launch emotion_perception cahfw.launch.py [image_topic:=/camera/image_raw] [params_file:=...]
[namespace:=...] [backend:=...] [device:=...] [model_path:=...] [publish_debug_image:=true] [face_detector:=cnn]

Starts cahfw_node with config/cahfw.yaml; see emotion_perception/ros/launch_description.py.
"""

from emotion_perception.ros.launch_description import node_launch_description


def generate_launch_description():
    return node_launch_description("cahfw")
