"""Rosbag replay benchmark: throughput, end-to-end latency and drops of the real nodes.

For every (node, backend, bag) combination one node process is started and fed the bag over
DDS at fixed rates, or by a peak-throughput search (the highest rate losing <= 5% of frames),
several iterations each. All combinations run in one invocation, so their ratios are measured
side by side on the same machine state.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from emotion_perception.bench.replay import ReplayResult

MAX_LOSS_AT_PEAK = 0.05


@dataclass(frozen=True)
class Combination:
    node: str  # "benet" | "cahfw"
    backend: str
    bag: Path

    @property
    def label(self) -> str:
        return f"{self.node}/{self.backend}/{self.bag.name}"


def run_record(result: ReplayResult, combination: Combination, iteration: int) -> dict[str, Any]:
    latency = result.latency_summary()
    return {
        "label": combination.label, "node": combination.node, "backend": combination.backend,
        "bag": str(combination.bag), "iteration": iteration,
        "rate_hz": result.rate_hz, "output_rate_hz": result.output_rate_hz,
        "sent": result.sent, "received": result.received, "dropped": result.dropped,
        "loss": result.dropped / result.sent if result.sent else math.nan,
        "latency_ms": latency,
        "node_cpu_percent": result.node_usage.cpu_percent,
        "node_rss_peak_mb": result.node_usage.rss_peak_mb,
        "node_counters": result.node_counters,
        # every frame's latency, so plots and other statistics can be redrawn from the JSON
        "latencies_ms_raw": [round(float(v), 3) for v in result.latencies_ms],
    }


def peak_search(play, low_hz: float, high_hz: float, steps: int) -> tuple[float, list[ReplayResult]]:
    """Highest rate with loss <= 5%: double from low_hz until it fails (or high_hz), then bisect."""
    results: list[ReplayResult] = []

    def passes(rate: float) -> bool:
        result = play(rate)
        results.append(result)
        return result.dropped <= MAX_LOSS_AT_PEAK * result.sent

    good, bad = 0.0, None
    rate = low_hz
    while rate <= high_hz:
        if passes(rate):
            good, rate = rate, rate * 2
        else:
            bad = rate
            break
    if bad is None:
        return good, results
    for _ in range(steps):
        middle = (good + bad) / 2 if good > 0 else bad / 2
        if passes(middle):
            good = middle
        else:
            bad = middle
    return good, results


def run_benchmark(
    bags: list[Path], nodes: list[str], backends: list[str], rates: list[float] | None, sweep: bool,
    iterations: int, frames: int | None, env: dict[str, str], log_dir: Path,
    node_parameters: dict[str, Any] | None = None, sweep_range: tuple[float, float] = (2.0, 400.0),
) -> dict[str, Any]:
    """Run every combination; returns the report (also the JSON written by the CLI)."""
    # Imported here: the CLI imports this module to list its options, and bag_io needs OpenCV
    # and tqdm, which a machine running other commands (bench gpu-check) may lack.
    from tqdm import tqdm

    from emotion_perception.bench.bag_io import read_image_bag
    from emotion_perception.bench.replay import NodeProcess, Replayer

    combinations = [Combination(n, b, bag) for n in nodes for b in backends for bag in bags]
    report: dict[str, Any] = {"header": system_header(), "runs": [], "peaks": []}
    log_dir.mkdir(parents=True, exist_ok=True)
    replayer = Replayer(image_topic="/bench/image", emotions_topic="/emotions")
    try:
        for combination in tqdm(combinations, desc="combinations", unit="combo"):
            frames_of_bag = list(read_image_bag(combination.bag))
            loaded = replayer.load(frames_of_bag)
            parameters = {"backend": combination.backend, **(node_parameters or {})}
            node = NodeProcess(combination.node, parameters, "/bench/image", env,
                               log_path=log_dir / f"{combination.label.replace('/', '_')}.log")
            try:
                replayer.wait_for_subscriber(timeout=120.0, node=node, probe=loaded[0])
                count = frames or len(loaded)
                # One warm-up pass: first inferences allocate and compile; they are not measured.
                replayer.play(loaded, rate_hz=5.0, count=min(5, count), node=node)

                # Bound now (default arguments), not looked up when called: one combination's frames and node.
                def play(rate: float, loaded: list[tuple[Any, Any]] = loaded, count: int = count,
                         node: NodeProcess = node) -> ReplayResult:
                    return replayer.play(loaded, rate_hz=rate, count=count, node=node)

                for iteration in range(iterations):
                    for rate in rates or []:
                        report["runs"].append(run_record(play(rate), combination, iteration))
                    if sweep:
                        peak, results = peak_search(play, *sweep_range, steps=4)
                        for result in results:
                            report["runs"].append(run_record(result, combination, iteration) | {"sweep": True})
                        report["peaks"].append({"label": combination.label, "iteration": iteration,
                                                "peak_rate_hz": peak})
            finally:
                code = node.stop()
                if code not in (0, -2, 130, None):
                    report.setdefault("node_exit_codes", {})[combination.label] = code
    finally:
        replayer.close()
    return report


def system_header() -> dict[str, Any]:
    """Device and software versions for the report header."""
    import importlib.metadata as metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "ros-kilted-rclpy", "rosbags", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
        "rmw": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)"),
        "ros_distro": os.environ.get("ROS_DISTRO", "kilted (PyPI wheels)"), "versions": versions,
    }


def format_table(report: dict[str, Any]) -> str:
    header = (f"{'combination':<34} {'it':>2} {'rate':>6} {'out Hz':>7} {'sent':>5} {'recv':>5} {'drop':>5} "
              f"{'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'jit':>6} {'cpu%':>5} {'rssMB':>6}")
    lines = [header, "-" * len(header)]
    for run in report["runs"]:
        lat = run["latency_ms"]
        lines.append(
            f"{run['label']:<34} {run['iteration']:>2} {run['rate_hz']:>6.1f} {run['output_rate_hz']:>7.2f} "
            f"{run['sent']:>5} {run['received']:>5} {run['dropped']:>5} {lat['p50']:>7.1f} {lat['p90']:>7.1f} "
            f"{lat['p99']:>7.1f} {lat['max']:>7.1f} {lat['jitter']:>6.1f} {run['node_cpu_percent']:>5.0f} "
            f"{run['node_rss_peak_mb']:>6.0f}"
        )
    for peak in report.get("peaks", []):
        lines.append(f"peak {peak['label']} (iteration {peak['iteration']}): "
                     f"{peak['peak_rate_hz']:.1f} Hz with <= 5% loss")
    header_info = report["header"]
    lines.insert(0, f"device: {header_info['cpu']} ({header_info['cores']} cores)"
                    + (f", GPU {header_info['gpu']}" if header_info["gpu"] else "")
                    + "; latencies in ms, end to end over DDS")
    return "\n".join(lines)


def plot_latencies(report: dict[str, Any], out: Path) -> None:
    """Latency CDF and histogram per combination and fixed rate (first iteration)."""
    latencies = {
        f"{run['label']} @ {run['rate_hz']:g} Hz": np.asarray(run["latencies_ms_raw"])
        for run in report["runs"] if run["iteration"] == 0 and not run.get("sweep")
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, hist) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, values in latencies.items():
        if values.size == 0:
            continue
        ordered = np.sort(values)
        cdf.plot(ordered, np.arange(1, ordered.size + 1) / ordered.size, label=label)
        hist.hist(values, bins=30, alpha=0.5, label=label)
    cdf.set_xlabel("end-to-end latency (ms)")
    cdf.set_ylabel("fraction of frames")
    cdf.set_title("latency CDF")
    cdf.grid(alpha=0.3)
    hist.set_xlabel("end-to-end latency (ms)")
    hist.set_ylabel("frames")
    hist.set_title("latency histogram")
    cdf.legend(fontsize=7)
    device = report["header"]["gpu"] or report["header"]["cpu"]
    fig.suptitle(f"rosbag replay, {device}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], json_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------- command line
def add_arguments(parser) -> None:
    parser.add_argument("--bag", action="append", required=True,
                        help="rosbag2 to replay (sqlite3 or MCAP; Image or CompressedImage); "
                             "repeat for side-by-side runs")
    parser.add_argument("--node", default="benet", help="node(s) under test, comma-separated: benet,cahfw")
    parser.add_argument("--backends", default="auto",
                        help="backend(s), comma-separated: auto,torch,onnxruntime,tensorrt")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--rate", help="fixed playback rate(s) in Hz, comma-separated, e.g. 10,30,60")
    mode.add_argument("--sweep", action="store_true",
                      help="peak-throughput search: highest rate losing <= 5%% of frames")
    parser.add_argument("--iterations", type=int, default=1, help="repeat every measurement (default 1)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per run (cycling through the bag; default: the bag's length)")
    parser.add_argument("--sweep-range", type=float, nargs=2, default=(2.0, 400.0), metavar=("LOW", "HIGH"))
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="extra node parameter, e.g. --param device=cuda (repeatable)")
    parser.add_argument("--json", required=True, help="report file (JSON); the plot is written beside it as .png")


def _parse_value(text: str):
    import yaml

    return yaml.safe_load(text)


def main(args) -> int:
    import os
    import random

    from emotion_perception.bench.bag_io import BagError, check_bag
    from emotion_perception.errors import output_file_problem

    problem = output_file_problem("--json", Path(args.json))
    if problem:
        raise SystemExit(f"bench bag: {problem}")

    bags = [Path(b) for b in args.bag]
    for bag in bags:
        try:
            check_bag(bag)  # a damaged bag is one line here, not a traceback mid-benchmark
        except BagError as err:
            raise SystemExit(f"bench bag: {err}") from None
    rates = [float(r) for r in args.rate.split(",")] if args.rate else None
    parameters = {}
    for item in args.param:
        name, _, value = item.partition("=")
        if not value:
            raise SystemExit(f"bench bag: --param needs NAME=VALUE, got '{item}'")
        parameters[name] = _parse_value(value)
    env = dict(os.environ)
    # The benchmark's traffic stays on this machine and off the robot's domain.
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.Random().randint(1, 101)))
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")})
    json_path = Path(args.json)
    report = run_benchmark(
        bags, [n.strip() for n in args.node.split(",")], [b.strip() for b in args.backends.split(",")],
        rates, args.sweep, args.iterations, args.frames, env, json_path.parent / (json_path.stem + "_logs"),
        node_parameters=parameters, sweep_range=tuple(args.sweep_range),
    )
    write_report(report, json_path)
    plot_latencies(report, json_path.with_suffix(".png"))
    print(format_table(report))
    print(f"report: {json_path}\nplot: {json_path.with_suffix('.png')}")
    return 0
