"""`emotion-perception synth {emotic,caer,sequence,gallery}`: write synthetic datasets in the real formats."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="synth_kind", metavar="KIND", required=True)

    emotic = kinds.add_parser("emotic", help="EMOTIC-format scenes (Annotations.mat + emotic/), optionally HECO too",
                              description="EMOTIC-format scenes: OUT/Annotations/Annotations.mat (train/val/test) and "
                                          "OUT/emotic/<folder>/*.jpg; with --heco also OUT/HECO/.")
    _common(emotic)
    emotic.add_argument("--heco", action="store_true", help="also write a HECO-format set (OUT/HECO)")
    emotic.add_argument("--heco-images", type=int, default=None,
                        help="number of HECO images (default: a quarter of --images)")
    emotic.add_argument("--width", type=int, default=320, help="image width (default 320)")
    emotic.add_argument("--height", type=int, default=240, help="image height (default 240)")

    caer = kinds.add_parser("caer", help="CAER-S-format scenes (CAER-S/{train,test}/<Class>/*.png + face-box cache)")
    _common(caer)
    caer.add_argument("--size", type=int, default=224, help="image side (default 224)")

    sequence = kinds.add_parser("sequence",
                                help="a video sequence of people walking, crossing, occluding "
                                     "(MOTChallenge gt + emotions)",
                                description="Frames of people with known identities and slowly changing emotions: "
                                            "OUT/img1/*.jpg, OUT/gt/gt.txt (MOTChallenge), OUT/gt/emotions.csv, "
                                            "OUT/seqinfo.ini.")
    sequence.add_argument("--out", required=True, help="sequence folder to write")
    sequence.add_argument("--frames", type=int, required=True, help="number of frames")
    sequence.add_argument("--people", type=int, required=True, help="number of people (identities)")
    sequence.add_argument("--seed", type=int, default=0)
    sequence.add_argument("--kind", choices=("bodies", "faces"), default="bodies",
                          help="bodies: synthetic figures (BENet); faces: a real face photo's tiles "
                               "(face detector + expression)")
    sequence.add_argument("--rate", type=float, default=10.0, help="frames per second (default 10)")
    sequence.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))

    gallery = kinds.add_parser("gallery", help="render the documentation gallery of generated samples (PNG)")
    gallery.add_argument("--out", required=True, help="output PNG path (e.g. docs/images/synth_gallery.png)")
    gallery.add_argument("--seed", type=int, default=0)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output dataset root")
    parser.add_argument("--images", type=int, required=True, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes drawing images (output does not depend on it)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    from dataclasses import replace

    if args.synth_kind == "gallery":
        from emotion_perception.data.synth.gallery import write_gallery

        path = write_gallery(args.out, seed=args.seed)
        print(f"wrote {path}")
        return 0
    if args.synth_kind == "sequence":
        from emotion_perception.data.synth.sequence import SequenceSettings, write_sequence

        try:
            settings = SequenceSettings(frames=args.frames, people=args.people, seed=args.seed, kind=args.kind,
                                        width=args.size[0], height=args.size[1], rate_hz=args.rate)
        except ValueError as err:
            raise SystemExit(f"synth sequence: {err}") from err
        print(f"synth sequence: wrote {write_sequence(args.out, settings)} "
              f"({args.frames} frames, {args.people} people, {args.kind})")
        return 0
    if args.images < 1:
        raise SystemExit(f"synth {args.synth_kind}: --images must be >= 1, got {args.images}")

    from emotion_perception.data.synth.scenes import CAER_SYNTH_PRESETS, EMOTIC_SYNTH_PRESETS
    from emotion_perception.data.synth.writers import write_caer_dataset, write_emotic_dataset

    if args.synth_kind == "emotic":
        emotic_config = replace(EMOTIC_SYNTH_PRESETS["emotic"], width=args.width, height=args.height)
        heco_images = 0
        if args.heco:
            heco_images = args.heco_images if args.heco_images is not None else max(1, args.images // 4)
        counts = write_emotic_dataset(args.out, args.images, args.seed, emotic_config, heco_images=heco_images,
                                      workers=args.workers, progress=not args.no_progress)
    else:
        caer_config = replace(CAER_SYNTH_PRESETS["caer"], width=args.size, height=args.size)
        counts = write_caer_dataset(args.out, args.images, args.seed, caer_config, workers=args.workers,
                                    progress=not args.no_progress)
    print(f"synth {args.synth_kind}: wrote {args.out}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0
