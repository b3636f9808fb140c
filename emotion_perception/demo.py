"""`emotion-perception demo` (the README's `make run`): a perception node, end to end.

    emotion-perception demo                      benet_node on synthetic scenes (the default)
    emotion-perception demo --node expression    expression_node on real photos

1. a demo recording written as a rosbag2 (generated once, cached): synthetic scenes, or (for
   ``--node expression``) real photographs that ship in installed packages: scikit-image's
   astronaut and cameraman and the six demo photos of the npm package @vladmandic/face-api
   that the setup installs with the face-expression model;
2. the node started from its console script with its default model (BENet: the demo model in
   models/; expression: face-api's real model installed by the setup);
3. the recording replayed over DDS to the node's image topic;
4. what a dialogue stack subscribed to /emotions sees, printed frame by frame;
5. an annotated image strip and video written to the output folder.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

from emotion_perception.cli_options import MODEL_FILE_HELP, add_model_file

DEMO_BAG_SEED = 7
CACHE = Path(".cache") / "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node", choices=("benet", "expression", "cahfw"), default="benet",
                        help="which node to run (default benet; expression: real faces on real photos)")
    parser.add_argument("--bag", help="replay this rosbag2 instead of the demo recording")
    parser.add_argument("--frames", type=int, default=12, help="frames of the synthetic recording (default 12)")
    parser.add_argument("--rate", type=float, default=3.0,
                        help="replay rate in Hz (default 3: no drops on a 2-core CPU)")
    parser.add_argument("--backend", default=None, help="override the node's backend (auto|tensorrt|onnxruntime|torch)")
    add_model_file(parser, f"{MODEL_FILE_HELP}: overrides the node's model_path (default: the demo model)",
                   required=False)
    parser.add_argument("--out", default=None,
                        help="folder for the strip, video and log (default out/demo, out/demo_<node> for the others)")


def _demo_bag(frames: int) -> Path:
    from emotion_perception.bench.bag_io import write_image_bag
    from emotion_perception.bench.replay_frames import synthetic_frames

    bag = CACHE / f"synthetic_{frames}f_seed{DEMO_BAG_SEED}"
    if not (bag / "metadata.yaml").is_file():
        print(f"writing the demo recording ({frames} synthetic scenes) to {bag}")
        images, truth = synthetic_frames(frames, people=None, seed=DEMO_BAG_SEED)
        bag.parent.mkdir(parents=True, exist_ok=True)
        write_image_bag(bag, images, rate_hz=10.0, annotations=truth)
    return bag


def _fit(image, width: int = 640, height: int = 480):
    """``image`` scaled to fit width x height (aspect kept), centred on black: one frame size."""
    import cv2
    import numpy as np

    scale = min(width / image.shape[1], height / image.shape[0])
    resized = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[top:top + resized.shape[0], left:left + resized.shape[1]] = resized
    return canvas


def real_photos() -> list:
    """The real photographs installed with the packages (RGB, 640x480): astronaut, cameraman,
    face-api's sample1..6. FileNotFoundError when the face-api photos are not installed."""
    import numpy as np
    from skimage import data

    from emotion_perception.data.imageio import read_rgb
    from emotion_perception.resources import external_model_dir

    folder = external_model_dir() / "samples" / "face-api"
    samples = sorted(folder.glob("sample*.jpg"))
    if not samples:
        raise FileNotFoundError(f"no face-api sample photos in {folder}: run scripts/setup.sh "
                                "(emotion-perception models fetch)")
    photos = [data.astronaut(), np.repeat(data.camera()[..., None], 3, axis=2)] + [read_rgb(p) for p in samples]
    return [_fit(photo) for photo in photos]


def _real_photo_bag() -> Path:
    from emotion_perception.bench.bag_io import write_image_bag

    bag = CACHE / "real_photos"
    if not (bag / "metadata.yaml").is_file():
        photos = real_photos()
        print(f"writing the real-photo recording ({len(photos)} photos) to {bag}")
        bag.parent.mkdir(parents=True, exist_ok=True)
        write_image_bag(bag, photos, rate_hz=1.0)
    return bag


def _describe(index: int, message) -> str:
    from emotion_perception.errors import quote_untrusted  # frame_id comes from the wire

    stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
    lines = [(f"frame {index:>3}  stamp {stamp:.3f}  frame_id {quote_untrusted(message.header.frame_id)}  "
             f"{len(message.people)} {'person' if len(message.people) == 1 else 'people'}")]
    for person in message.people:
        box = f"({person.x_min:4.0f},{person.y_min:4.0f})-({person.x_max:4.0f},{person.y_max:4.0f})"
        top = ", ".join(f"{name} {person.scores[list(message.categories).index(name)]:.2f}"
                        for name in list(person.labels)[:3]) or "(no emotion over threshold)"
        vad = "" if person.valence != person.valence else (
            f"  V {person.valence:.2f} A {person.arousal:.2f} D {person.dominance:.2f}")
        # An empty id is a person whose track is not confirmed yet (track_confirmation_frames).
        who = f"id {person.id:>3}" if person.id else "id new"
        lines.append(f"      {who} score {person.score:.2f} box {box}  {top}{vad}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from emotion_perception.bench.bag_io import BagError, decode_frame, read_image_bag
    from emotion_perception.bench.replay import NodeProcess, Replayer
    from emotion_perception.ros.debug_image import draw_person_emotions

    out = Path(args.out or ("out/demo" if args.node == "benet" else f"out/demo_{args.node}"))
    out.mkdir(parents=True, exist_ok=True)
    node_name = f"{args.node}_node"
    try:
        bag = Path(args.bag) if args.bag else (_demo_bag(args.frames) if args.node != "expression"
                                               else _real_photo_bag())
    except FileNotFoundError as err:
        print(f"error: {err}")
        return 2
    try:
        frames = list(read_image_bag(bag))
        images: dict[int, np.ndarray] = {}
        for frame in frames:
            _, rgb = decode_frame(frame)
            images[len(images)] = rgb
    except BagError as err:
        print(f"error: {err}")
        return 2

    # Keep the demo's traffic on this machine unless the user chose otherwise.
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(1, 101)))
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")})

    parameters = {}
    if args.backend:
        parameters["backend"] = args.backend
    if args.model:
        parameters["model_path"] = str(Path(args.model).resolve())
    log = out / f"{node_name}.log"
    print(f"starting {node_name} (log: {log})")
    node = NodeProcess(args.node, parameters, "/camera/image_raw", env, log_path=log)
    replayer = Replayer(image_topic="/camera/image_raw", emotions_topic="/emotions")
    try:
        loaded = replayer.load(frames)
        try:
            replayer.wait_for_subscriber(timeout=120.0, node=node, probe=loaded[0])
        except (RuntimeError, TimeoutError) as err:
            print(f"{node_name} did not come up: {err}\n--- node log ---\n{log.read_text()}")
            return 1
        print(f"replaying {len(loaded)} frames from {bag} at {args.rate:g} Hz; "
              "/emotions as a dialogue stack sees it:\n")
        result = replayer.play(loaded, rate_hz=args.rate, settle_s=10.0, node=node)
    finally:
        node.stop()
        replayer.close()

    annotated = []
    for stamp, index in sorted(result.frame_of_stamp.items()):
        message = result.outputs.get(stamp)
        if message is None:
            print(f"frame {index:>3}  (dropped: the node was busy with the previous frame)")
            continue
        print(_describe(index, message))
        annotated.append(draw_person_emotions(images[index], message))

    if annotated:
        height, width = annotated[0].shape[:2]
        writer = cv2.VideoWriter(str(out / "demo.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), max(args.rate, 1.0),
                                 (width, height))
        for image in annotated:
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        writer.release()
        columns = 3
        tiles = [cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
                 for image in annotated[:6 if args.node == "benet" else 9]]
        while len(tiles) % columns:
            tiles.append(np.zeros_like(tiles[0]))
        rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
        cv2.imwrite(str(out / "demo_strip.png"), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))

    latency = result.latency_summary()
    print(f"\n{result.received}/{result.sent} frames answered, {result.dropped} dropped; end-to-end latency "
          f"p50 {latency['p50']:.0f} ms, p90 {latency['p90']:.0f} ms "
          f"(node CPU {result.node_usage.cpu_percent:.0f}% of a core)")
    if annotated:
        print(f"annotated strip: {out / 'demo_strip.png'}\nvideo: {out / 'demo.mp4'}")
    return 0 if result.received > 0 else 1
