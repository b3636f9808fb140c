"""ros2 launch emotion_perception cahfw.launch.py [image_topic:=/camera/image_raw] [params_file:=...]
[namespace:=...] [backend:=...] [device:=...] [model_path:=...] [publish_debug_image:=true] [autostart:=false]
[face_detector:=cnn]

Starts cahfw_node with config/cahfw.yaml; see emotion_perception_launch.py beside this file.
"""

import os
import sys

# The shared description sits beside this file (not in the emotion_perception Python package,
# which the Python running ros2 launch may not see).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emotion_perception_launch import node_launch_description


def generate_launch_description():
    return node_launch_description("cahfw")
