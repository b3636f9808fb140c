"""Third-party models with real weights, from registry packages pinned by version and checksum.

    emotion-perception models fetch [--dest DIR] [--archives DIR] [--force]
    emotion-perception models info

| file (in :func:`emotion_perception.resources.external_model_dir`) | from | license |
|---|---|---|
| ``face_expression.pt`` | npm ``@vladmandic/face-api`` 1.7.15, ``model/face_expression_model.*`` | MIT |
| ``mtcnn.pt`` | PyPI ``facenet-pytorch`` 2.6.0, ``facenet_pytorch/data/{p,r,o}net.pt`` | MIT |
| ``samples/face-api/sample{1..6}.jpg`` | the same npm package's ``demo/`` photos (real people) | MIT |

The archives are obtained with the registries' own clients (``npm pack``, ``pip download
--no-deps``), checked against the pinned SHA-256 and kept in a cache; the weights are
converted once into this project's checkpoint format (``torch.load(weights_only=True)``) with
their provenance. Nothing is downloaded at run time: a node or ``predict`` only reads the
converted files. Offline (a robot without registry access): copy the two archives by hand
(their file names are in :data:`PACKAGES`) into a folder and pass ``--archives DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emotion_perception.export.engine_cache import file_sha256

FORMAT = "emotion_perception.external_models/1"


@dataclass(frozen=True)
class RegistryPackage:
    registry: str  # "npm" | "pypi"
    name: str
    version: str
    archive: str  # the file name the registry client writes
    sha256: str
    license: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}" if self.registry == "npm" else f"{self.name}=={self.version}"


PACKAGES: dict[str, RegistryPackage] = {
    "face-api": RegistryPackage("npm", "@vladmandic/face-api", "1.7.15", "vladmandic-face-api-1.7.15.tgz",
                                "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031", "MIT"),
    "facenet-pytorch": RegistryPackage("pypi", "facenet-pytorch", "2.6.0", "facenet_pytorch-2.6.0-py3-none-any.whl",
                                       "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca", "MIT"),
}
SAMPLE_PHOTOS = tuple(f"sample{i}.jpg" for i in range(1, 7))

# What face-api says, and does not say, about the expression model's training data.
EXPRESSION_TRAINED_ON = ("real: face photographs; face-api does not name the training datasets "
                         "(not CAER-S, not EMOTIC); 7 basic expressions of a frontal face, no context")


class ExternalModelError(RuntimeError):
    """A third-party model that cannot be obtained or converted; the text says why and what to do."""


def _download(package: RegistryPackage, into: Path) -> Path:
    """Fetch ``package``'s archive with its registry's client into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    if package.registry == "npm":
        client = shutil.which("npm")
        if client is None:
            raise ExternalModelError(
                f"npm is not installed: it is needed once to fetch {package.spec} (install Node.js/npm, or copy "
                f"{package.archive} by hand and pass --archives DIR)")
        command = [client, "pack", package.spec, "--pack-destination", str(into), "--silent"]
    else:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                   "-d", str(into), package.spec]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    path = into / package.archive
    if result.returncode != 0 or not path.is_file():
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ExternalModelError(f"could not fetch {package.spec} from {package.registry}: {detail[0]} "
                                 f"(offline: copy {package.archive} by hand and pass --archives DIR)")
    return path


def obtain_archive(key: str, cache: Path, archives: Path | None = None) -> Path:
    """The verified archive of ``PACKAGES[key]``: from ``archives`` if given, else the cache,
    else downloaded into the cache. A checksum mismatch is an error, never a silent reuse."""
    package = PACKAGES[key]
    if archives is not None:
        path = archives / package.archive
        if not path.is_file():
            raise ExternalModelError(f"{path} not found (expected {package.spec} as {package.archive})")
    else:
        path = cache / package.archive
        if not path.is_file() or file_sha256(path) != package.sha256:
            path = _download(package, cache)
    digest = file_sha256(path)
    if digest != package.sha256:
        raise ExternalModelError(f"{path}: sha256 {digest} is not the pinned {package.sha256} of {package.spec}")
    return path


def _tar_member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        member = tar.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise ExternalModelError(f"{name} is not in the face-api package")
    return member.read()


def convert_face_api(archive: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(checkpoint of the expression model, sample photos by name) from the npm archive."""
    import torch

    from emotion_perception.nets.expression import (
        ExpressionNetConfig,
        decode_tfjs_weights,
        state_dict_from_face_api,
    )

    with tarfile.open(archive, "r:gz") as tar:
        manifest = json.loads(_tar_member(tar, "package/model/face_expression_model-weights_manifest.json"))
        weights = _tar_member(tar, "package/model/face_expression_model.bin")
        photos = {name: _tar_member(tar, f"package/demo/{name}") for name in SAMPLE_PHOTOS}
        license_text = _tar_member(tar, "package/LICENSE")
    config = ExpressionNetConfig()
    state = state_dict_from_face_api(decode_tfjs_weights(manifest, weights), config)
    package = PACKAGES["face-api"]
    checkpoint = {
        "model_name": "expression",
        "config": asdict(config),
        "model": {k: v.contiguous() for k, v in state.items()},
        "trained_on": EXPRESSION_TRAINED_ON,
        "provenance": {"registry": package.registry, "package": package.name, "version": package.version,
                       "archive_sha256": package.sha256, "license": package.license,
                       "files": ["model/face_expression_model-weights_manifest.json",
                                 "model/face_expression_model.bin"],
                       "classes": "neutral, happy, sad, angry, fearful, disgusted, surprised -> CAER-S names"},
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)  # checks now that every value is weights_only-loadable
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    return checkpoint, {**photos, "LICENSE": license_text}


def convert_facenet_pytorch(archive: Path) -> dict[str, Any]:
    """The MTCNN checkpoint (P-, R-, O-Net) from the facenet-pytorch wheel."""
    from emotion_perception.nets.mtcnn import convert_facenet_pytorch as convert

    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(archive) as wheel:
        for net in ("pnet", "rnet", "onet"):
            try:
                data = wheel.read(f"facenet_pytorch/data/{net}.pt")
            except KeyError as err:
                raise ExternalModelError(f"facenet_pytorch/data/{net}.pt is not in {archive.name}") from err
            (Path(tmp) / f"{net}.pt").write_bytes(data)
        checkpoint = dict(convert(Path(tmp)))
    package = PACKAGES["facenet-pytorch"]
    checkpoint["provenance"] = {"registry": package.registry, "package": package.name, "version": package.version,
                                "archive_sha256": package.sha256, "license": package.license,
                                "files": ["facenet_pytorch/data/pnet.pt", "rnet.pt", "onet.pt"],
                                "trained_on": "real: WIDER FACE and CelebA (Zhang et al. 2016, the original MTCNN)"}
    return checkpoint


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)


def _torch_bytes(checkpoint: dict[str, Any]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def fetch(dest: Path, cache: Path, archives: Path | None = None, force: bool = False) -> dict[str, Any]:
    """Obtain, verify and convert every package into ``dest``; returns the record written to
    ``dest/external_models.json``. Idempotent: with the same pins and intact outputs it only
    re-checks checksums."""
    record_path = dest / "external_models.json"
    pins = {key: asdict(p) for key, p in PACKAGES.items()}
    if not force and record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("format") == FORMAT and record.get("packages") == pins and all(
                    (dest / name).is_file() and file_sha256(dest / name) == digest
                    for name, digest in record.get("files", {}).items()):
                return record
        except (OSError, ValueError):
            pass  # rebuild below
    files: dict[str, str] = {}
    expression, extras = convert_face_api(obtain_archive("face-api", cache, archives))
    outputs = {"face_expression.pt": _torch_bytes(expression)}
    outputs.update({f"samples/face-api/{name}": data for name, data in extras.items()})
    outputs["mtcnn.pt"] = _torch_bytes(convert_facenet_pytorch(obtain_archive("facenet-pytorch", cache, archives)))
    for name, data in outputs.items():
        _atomic_write(dest / name, data)
        files[name] = hashlib.sha256(data).hexdigest()
    record = {"format": FORMAT, "packages": pins, "files": files}
    _atomic_write(record_path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return record


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    fetch_parser = sub.add_parser("fetch", help="obtain, verify and convert the pinned third-party models")
    fetch_parser.add_argument("--dest", type=Path, help="output folder (default: $EMOTION_PERCEPTION_MODEL_DIR, "
                                                        "else <prefix>/share/emotion_perception/external_models)")
    fetch_parser.add_argument("--cache", type=Path, help="where downloaded archives are kept (default: DEST/.archives)")
    fetch_parser.add_argument("--archives", type=Path, help="offline: a folder holding the archives, copied by hand")
    fetch_parser.add_argument("--force", action="store_true", help="convert again even if the outputs are intact")
    sub.add_parser("info", help="where the third-party models are and what they are")


def main(args: argparse.Namespace) -> int:
    from emotion_perception.resources import external_model_dir

    if args.models_command == "info":
        dest = external_model_dir()
        print(f"third-party models: {dest}")
        for key, package in PACKAGES.items():
            print(f"  {key}: {package.registry} {package.spec} ({package.license}), sha256 {package.sha256[:16]}...")
        record_file = dest / "external_models.json"
        print(f"  installed: {'yes' if record_file.is_file() else 'no (run: emotion-perception models fetch)'}")
        return 0
    dest = args.dest or external_model_dir()
    try:
        record = fetch(dest, args.cache or dest / ".archives", args.archives, args.force)
    except (ExternalModelError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"[models] {len(record['files'])} files in {dest} "
          f"({', '.join(f'{p.name} {p.version}' for p in PACKAGES.values())})", file=sys.stderr)
    return 0
