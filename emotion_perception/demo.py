"""`emotion-perception demo` (the README's `make run`): the BENet node, end to end.

1. a demo recording: synthetic scenes written as a rosbag2 (generated once, cached);
2. benet_node started from its console script with the demo model shipped in models/;
3. the recording replayed over DDS to the node's image topic;
4. what a dialogue stack subscribed to /emotions sees, printed frame by frame;
5. an annotated image strip and video written to the output folder.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path

DEMO_BAG_SEED = 7
CACHE = Path(".cache") / "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", help="replay this rosbag2 instead of the synthetic demo recording")
    parser.add_argument("--frames", type=int, default=12, help="frames of the synthetic recording (default 12)")
    parser.add_argument("--rate", type=float, default=3.0, help="replay rate in Hz (default 3: no drops on a 2-core CPU)")
    parser.add_argument("--backend", default=None, help="override the node's backend (auto|tensorrt|onnxruntime|torch)")
    parser.add_argument("--model", default=None, help="override the node's model_path (default: the demo model)")
    parser.add_argument("--out", default="out/demo", help="folder for the strip, video and log (default out/demo)")


def _demo_bag(frames: int) -> Path:
    from emotion_perception.bench.bag_io import write_image_bag
    from emotion_perception.bench.scenes import synthetic_frames

    bag = CACHE / f"synthetic_{frames}f_seed{DEMO_BAG_SEED}"
    if not (bag / "metadata.yaml").is_file():
        print(f"writing the demo recording ({frames} synthetic scenes) to {bag}")
        images, truth = synthetic_frames(frames, people=None, seed=DEMO_BAG_SEED)
        bag.parent.mkdir(parents=True, exist_ok=True)
        write_image_bag(bag, images, rate_hz=10.0, annotations=truth)
    return bag


def _describe(index: int, message) -> str:
    stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
    lines = [f"frame {index:>3}  stamp {stamp:.3f}  frame_id '{message.header.frame_id}'  "
             f"{len(message.people)} {'person' if len(message.people) == 1 else 'people'}"]
    for person in message.people:
        box = f"({person.x_min:4.0f},{person.y_min:4.0f})-({person.x_max:4.0f},{person.y_max:4.0f})"
        top = ", ".join(f"{name} {person.scores[list(message.categories).index(name)]:.2f}"
                        for name in list(person.labels)[:3]) or "(no emotion over threshold)"
        vad = "" if person.valence != person.valence else (
            f"  V {person.valence:.2f} A {person.arousal:.2f} D {person.dominance:.2f}")
        lines.append(f"      #{person.id} score {person.score:.2f} box {box}  {top}{vad}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from emotion_perception.bench.bag_io import decode_frame, read_image_bag
    from emotion_perception.bench.replay import NodeProcess, Replayer
    from emotion_perception.ros.debug_image import draw_person_emotions

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bag = Path(args.bag) if args.bag else _demo_bag(args.frames)
    frames = list(read_image_bag(bag))
    images = {}
    for frame in frames:
        _, rgb = decode_frame(frame)
        images[len(images)] = rgb

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
    print(f"starting benet_node (log: {out / 'benet_node.log'})")
    node = NodeProcess("benet", parameters, "/camera/image_raw", env, log_path=out / "benet_node.log")
    replayer = Replayer(image_topic="/camera/image_raw", emotions_topic="/emotions")
    try:
        loaded = replayer.load(frames)
        try:
            replayer.wait_for_subscriber(timeout=120.0, node=node, probe=loaded[0])
        except (RuntimeError, TimeoutError) as err:
            print(f"benet_node did not come up: {err}\n--- node log ---\n{(out / 'benet_node.log').read_text()}")
            return 1
        print(f"replaying {len(loaded)} frames from {bag} at {args.rate:g} Hz; /emotions as a dialogue stack sees it:\n")
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
        writer = cv2.VideoWriter(str(out / "demo.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), max(args.rate, 1.0), (width, height))
        for image in annotated:
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        writer.release()
        columns = 3
        tiles = [cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA) for image in annotated[:6]]
        while len(tiles) % columns:
            tiles.append(np.zeros_like(tiles[0]))
        rows = [np.concatenate(tiles[i:i + columns], axis=1) for i in range(0, len(tiles), columns)]
        cv2.imwrite(str(out / "demo_strip.png"), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))

    latency = result.latency_summary()
    print(f"\n{result.received}/{result.sent} frames answered, {result.dropped} dropped; end-to-end latency "
          f"p50 {latency['p50']:.0f} ms, p90 {latency['p90']:.0f} ms (node CPU {result.node_usage.cpu_percent:.0f}% of a core)")
    if annotated:
        print(f"annotated strip: {out / 'demo_strip.png'}\nvideo: {out / 'demo.mp4'}")
    return 0 if result.received > 0 else 1
