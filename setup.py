"""pip/setuptools install of emotion_perception (colcon users get it through ament_cmake_python).

`pip install -e .` installs the Python package and the console scripts; the ROS interface
package (messages) is built by colcon from CMakeLists.txt (see scripts/setup.sh).
"""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "emotion_perception"
HERE = Path(__file__).parent


def _files(folder: str, pattern: str = "*") -> list[str]:
    # setuptools wants data_files relative to setup.py
    return sorted(str(p.relative_to(HERE)) for p in (HERE / folder).glob(pattern) if p.is_file())


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Real-time, context-aware emotion recognition for robots (BENet, CAHFW-Net) as a ROS 2 package",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    include_package_data=True,
    # The layout of an ament install in the pip prefix, so a pip install finds its demo models
    # and configs (emotion_perception/resources.py) and `ros2 run` / `ros2 launch` find the
    # package (an editable install gets the same from scripts/install_ament_layout.py).
    data_files=[
        (f"lib/{PACKAGE}", ["scripts/benet_node", "scripts/cahfw_node", "scripts/expression_node"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", _files("launch", "*.py")),
        (f"share/{PACKAGE}/config", _files("config", "*.yaml") + _files("config", "*.xml")),
        (f"share/{PACKAGE}/models", _files("models")),
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
    ],
    install_requires=[
        # torch is deliberately not pinned here beyond a floor: installing it is the setup
        # script's job (a local CPU build here, a CUDA build on robots).
        "torch>=2.1",
        "numpy>=1.24",
        "scipy>=1.10",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        # Tracking (on by default in the nodes). trackers==2.6.1 itself is installed by
        # scripts/setup.sh with --no-deps: it declares opencv-python, which would clash with
        # the headless build (scripts/requirements-nodeps.txt); trackeval (eval tracking) too.
        "supervision>=0.26.1",
    ],
    extras_require={
        "train": ["tensorboard>=2.14", "scikit-learn>=1.3", "pycocotools>=2.0.7"],
        "faces": ["dlib-bin>=19.24", "face-recognition-models>=0.3"],
        "deploy": ["onnx>=1.15", "onnxruntime>=1.17", "onnxslim>=0.1.30"],
        "bench": ["rosbags>=0.9.20"],
        "test": ["pytest>=7", "hypothesis>=6", "scikit-image>=0.22", "catkin-pkg>=1.0"],
    },
    entry_points={
        "console_scripts": [
            "emotion-perception = emotion_perception.cli:main",
            "benet_node = emotion_perception.ros.benet_node:main",
            "cahfw_node = emotion_perception.ros.cahfw_node:main",
            "expression_node = emotion_perception.ros.expression_node:main",
        ],
    },
)
