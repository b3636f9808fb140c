"""`emotion-perception bench make-bag`: build rosbag2 recordings from images or synthetic scenes."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Write a folder of images, a MOTChallenge sequence, or synthetic scenes as a rosbag2 "
                          "of sensor_msgs/Image (or CompressedImage) at a fixed rate.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="folder of images (png/jpg/bmp), taken in name order")
    source.add_argument("--synthetic", type=int, metavar="N",
                        help="N synthetic scenes (ground truth saved beside the bag)")
    source.add_argument("--sequence", metavar="DIR",
                        help="a MOTChallenge sequence folder (synth sequence): its frames at its frameRate "
                             "unless --rate is given")
    source.add_argument("--photo-faces", type=int, metavar="N",
                        help="N frames tiling a real photo's face (--people copies; default photo: scikit-image's "
                             "astronaut), for comparisons that need dlib to find real faces")
    parser.add_argument("--people", type=int, default=None,
                        help="exactly this many people (faces) per frame (synthetic default: 1-8 mixed; photo: 1)")
    parser.add_argument("--photo", default=None,
                        help="--photo-faces: photo with one face (default: scikit-image's astronaut)")
    parser.add_argument("--face-box", type=float, nargs=4, default=None, metavar=("X1", "Y1", "X2", "Y2"),
                        help="--photo-faces: the face in --photo (default: found with dlib HOG)")
    parser.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"),
                        help="synthetic frame size (default 640 480)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="bag directory to create (must not exist)")
    parser.add_argument("--rate", type=float, default=None,
                        help="frames per second of the recording (default 15; --sequence: its frameRate)")
    parser.add_argument("--topic", default="/camera/image_raw")
    parser.add_argument("--frame-id", default="camera")
    parser.add_argument("--compressed", choices=("jpeg", "png"), default=None,
                        help="store CompressedImage instead of raw rgb8")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from emotion_perception.bench.bag_io import write_image_bag

    annotations = None
    frames: Iterator[np.ndarray]
    width, height = args.size
    if args.sequence:
        from emotion_perception.data.imageio import read_rgb
        from emotion_perception.data.synth.sequence import read_sequence_info

        try:
            sequence = read_sequence_info(args.sequence)
        except FileNotFoundError as err:
            raise SystemExit(f"bench make-bag: {err}") from None
        args.rate = args.rate or sequence.rate_hz
        frames = (read_rgb(p) for p in tqdm(sequence.frame_paths, desc="frames", unit="img"))
    elif args.images:
        from emotion_perception.data.imageio import read_rgb

        paths = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
        if not paths:
            raise SystemExit(f"bench make-bag: no images in {args.images}")
        frames = (read_rgb(p) for p in tqdm(paths, desc="images", unit="img"))
    elif args.photo_faces:
        from emotion_perception.bench.replay_frames import photo_collage_frames

        if args.photo:
            from emotion_perception.data.imageio import read_rgb

            photo = read_rgb(args.photo)
        else:
            try:
                from skimage import data as skimage_data
            except ImportError:
                raise SystemExit("bench make-bag: --photo-faces without --photo needs scikit-image "
                                 "(its astronaut photo)") from None
            photo = skimage_data.astronaut()
        face_box = args.face_box
        if face_box is None:
            from emotion_perception.data.faces import FaceDetector

            found = FaceDetector("hog").detect(photo)
            if len(found) == 0:
                raise SystemExit("bench make-bag: dlib found no face in the photo; give --face-box")
            face_box = found[0, :4].tolist()
        frame_list, annotations = photo_collage_frames(args.photo_faces, args.people or 1, photo, tuple(face_box),
                                                       width, height, seed=args.seed)
        frames = iter(frame_list)
    else:
        from emotion_perception.bench.replay_frames import synthetic_frames

        frame_list, annotations = synthetic_frames(args.synthetic, args.people, width, height, seed=args.seed)
        frames = iter(frame_list)
    args.rate = args.rate or 15.0
    from emotion_perception.data.imageio import ImageError

    try:
        count = write_image_bag(args.out, frames, args.rate, topic=args.topic, frame_id=args.frame_id,
                                compressed=args.compressed, storage=args.storage, annotations=annotations)
    except (FileNotFoundError, ImageError) as err:  # an input image that cannot be used
        raise SystemExit(f"bench make-bag: {err} (the bag in {args.out} is incomplete)") from None
    print(f"wrote {count} frames to {args.out} ({args.storage}, {args.compressed or 'rgb8'}, {args.rate:g} Hz, "
          f"topic {args.topic})")
    return 0
