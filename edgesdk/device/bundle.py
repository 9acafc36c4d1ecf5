"""Bundles: a directory with manifest.json and the files it names, written atomically, verified on read.

Device side: json, hashlib and numpy only. Layout:

    manifest.json        schema, target, backend, precision, inputs, outputs, preprocess, postprocess,
                         files {relative path: sha256}, versions, validation, benchmark, golden, ...
    model/               the engine artifact (artifact.json + the engine's files)
    golden/              in_<k>_<input>.npy / out_<k>_<output>.npy: real inputs and the reference outputs;
                         int8 bundles also exp_<k>_<output>.npy: the bundle's own outputs on the build machine
    labels.txt           class names, when the model has them
    report.md            parity table and latency figures for people
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesdk.atomic import write_bytes
from edgesdk.errors import BundleError, EdgeSDKError

SCHEMA = 1
MANIFEST = "manifest.json"
MODEL_DIR = "model"
GOLDEN_DIR = "golden"
_GOLDEN_SIDES = ("inputs", "outputs", "expected")
REQUIRED_KEYS = ("schema", "target", "backend", "precision", "inputs", "outputs", "preprocess", "postprocess",
                 "files", "versions", "validation", "benchmark", "golden")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _safe_relpath(rel: str, where: str) -> str:
    """Manifest paths stay inside the bundle: relative, no '..', no backslashes."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel or ".." in Path(rel).parts:
        raise BundleError(f"{where}: unsafe file path {rel!r} in manifest")
    return rel


@dataclass
class Manifest:
    data: dict[str, Any]
    root: Path

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    @property
    def backend(self) -> str:
        return self.data["backend"]

    def golden_pairs(self) -> list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """The golden (inputs, reference outputs) samples, loaded without pickle."""
        pairs = []
        for sample in self.data["golden"]:
            ins = {n: np.load(self.root / p, allow_pickle=False) for n, p in sample["inputs"].items()}
            outs = {n: np.load(self.root / p, allow_pickle=False) for n, p in sample["outputs"].items()}
            pairs.append((ins, outs))
        return pairs

    def golden_expected(self) -> list[dict[str, np.ndarray]] | None:
        """The bundle's own outputs on the golden inputs as the build machine ran them (int8 bundles, when
        the engine ran there), or None. A device must reproduce these; the int8 error against fp32 is
        measured at build time and lives in 'validation' and 'quantization'."""
        samples = self.data["golden"]
        if not samples or not all("expected" in s for s in samples):
            return None
        return [{n: np.load(self.root / p, allow_pickle=False) for n, p in s["expected"].items()} for s in samples]


def read_manifest(path: str | Path, verify: bool = True) -> Manifest:
    """Read and check a bundle's manifest; with `verify`, every listed file's sha256 too.
    BundleError names the bundle and the file or key at fault."""
    root = Path(path)
    if root.is_file() and root.name == MANIFEST:
        root = root.parent
    if not root.is_dir():
        raise BundleError(f"{root}: no such bundle directory")
    mpath = root / MANIFEST
    try:
        data = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{mpath}: unreadable manifest: {e}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{mpath}: manifest must be a JSON object")
    if data.get("schema") != SCHEMA:
        raise BundleError(f"{mpath}: manifest schema {data.get('schema')!r}; this edgesdk reads schema {SCHEMA}"
                          + (" — upgrade edgesdk" if isinstance(data.get("schema"), int) and data["schema"] > SCHEMA else ""))
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise BundleError(f"{mpath}: manifest lacks keys {missing}")
    _check_types(data, mpath)
    files = data["files"]
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{mpath}: 'files' must map relative paths to sha256 digests")
    for rel, digest in files.items():
        _safe_relpath(rel, str(mpath))
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise BundleError(f"{mpath}: bad sha256 for {rel!r}")
        if verify:
            p = root / rel
            if not p.is_file() or p.is_symlink():
                raise BundleError(f"{root}: file {rel} is missing")
            if sha256_file(p) != digest:
                raise BundleError(f"{root}: file {rel} does not match its sha256 in the manifest (modified or corrupt)")
    for sample in data["golden"]:
        for rel in [p for side in _GOLDEN_SIDES for p in sample.get(side, {}).values()]:
            if _safe_relpath(rel, str(mpath)) not in files:
                raise BundleError(f"{mpath}: golden file {rel!r} is not covered by 'files'")
    if data.get("labels") is not None and _safe_relpath(data["labels"], str(mpath)) not in files:
        raise BundleError(f"{mpath}: labels file {data['labels']!r} is not covered by 'files'")
    return Manifest(data, root)


# manifest key -> the JSON types it may hold (None: null allowed)
_TYPES = {"target": (dict,), "backend": (str,), "precision": (str,), "inputs": (list,), "outputs": (list,),
          "preprocess": (dict, None), "postprocess": (dict, None), "versions": (dict,), "validation": (dict, None),
          "benchmark": (dict, None), "golden": (list,), "threads": (int, None), "labels": (str, None),
          "quantization": (dict, None)}
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", None: "null"}


def _check_types(data: dict, mpath: Path) -> None:
    """The shape of the keys the runtime reads: a manifest edited by hand fails here, naming the key."""
    from edgesdk.backends.base import PRECISIONS
    from edgesdk.backends.registry import names

    for key, kinds in _TYPES.items():
        if key not in data:
            continue
        v = data[key]
        if not any(v is None if k is None else isinstance(v, k) and not isinstance(v, bool) for k in kinds):
            want = " or ".join(_JSON_NAMES[k] for k in kinds)
            raise BundleError(f"{mpath}: manifest key {key!r} must be {want}, got {json.dumps(v)[:80]}")
    if data["backend"] not in names():
        raise BundleError(f"{mpath}: backend {data['backend']!r} is not one of {', '.join(names())}")
    if data["precision"] not in PRECISIONS:
        raise BundleError(f"{mpath}: precision {data['precision']!r} is not one of {', '.join(PRECISIONS)}")
    from edgesdk.device.postprocess import check_params
    from edgesdk.device.preprocess import PreprocessSpec

    try:
        if data["preprocess"] is not None:
            PreprocessSpec.from_dict(data["preprocess"])
        post = data["postprocess"] or {"kind": "none"}
        check_params(post.get("kind", "none"), post)
    except EdgeSDKError as e:
        raise BundleError(f"{mpath}: {e}") from None
    if data.get("threads") is not None and data["threads"] < 1:
        raise BundleError(f"{mpath}: threads must be >= 1 or null, got {data['threads']}")
    for k, sample in enumerate(data["golden"]):
        if not (isinstance(sample, dict) and all(isinstance(sample.get(side), dict) and all(
                isinstance(n, str) and isinstance(rel, str) for n, rel in sample[side].items())
                for side in _GOLDEN_SIDES if side != "expected" or side in sample)):
            raise BundleError(f"{mpath}: golden[{k}] must be {{\"inputs\": {{name: file}}, "
                              "\"outputs\": {name: file}} (and optionally \"expected\": {name: file})")


def write_manifest(root: Path, data: dict[str, Any]) -> Path:
    """Hash every file under `root` into data['files'] and write manifest.json (last, so a bundle
    directory with a manifest is complete)."""
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[p.relative_to(root).as_posix()] = sha256_file(p)
    data = {**data, "schema": SCHEMA, "files": files}
    # Strict JSON (RFC 8259), as the native reader expects: a figure that is not finite (the cosine of
    # an all-zero output) is written as null, never as a NaN/Infinity literal.
    return write_bytes(root / MANIFEST, json.dumps(_finite(data), indent=2, sort_keys=False, allow_nan=False).encode())


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if np.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def save_golden(root: Path, feeds: list[dict[str, np.ndarray]], outputs: list[dict[str, np.ndarray]]) -> list[dict]:
    """Write golden samples as .npy files; returns the manifest's 'golden' list."""
    golden = [{} for _ in feeds]
    add_golden(root, golden, "inputs", feeds)
    add_golden(root, golden, "outputs", outputs)
    return golden


def add_golden(root: Path, golden: list[dict], side: str, tensors: list[dict[str, np.ndarray]]) -> None:
    """Write one side ('inputs', 'outputs' or 'expected') of every golden sample and name its files."""
    (root / GOLDEN_DIR).mkdir(parents=True, exist_ok=True)
    prefix = {"inputs": "in", "outputs": "out", "expected": "exp"}[side]
    for k, (entry, sample) in enumerate(zip(golden, tensors)):
        entry[side] = {}
        for name, arr in sample.items():
            rel = f"{GOLDEN_DIR}/{prefix}_{k}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.npy"
            np.save(root / rel, np.ascontiguousarray(arr), allow_pickle=False)
            entry[side][name] = rel


# ---------------------------------------------------------------------------- signatures (ed25519)

SIGNATURE = "manifest.sig"


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BundleError("bundle signatures need the cryptography package: pip install 'edgesdk[sign]'") from None
    return serialization, ed25519


def generate_key(private_path: str | Path) -> tuple[Path, Path]:
    """Write a new ed25519 key pair: PRIVATE (PEM, mode 0600) and PRIVATE.pub (PEM)."""
    serialization, ed25519 = _crypto()
    private_path = Path(private_path)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pub_path = private_path.with_name(private_path.name + ".pub")
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        pub_path.write_bytes(pub)
    except FileExistsError:
        raise BundleError(f"{private_path}: exists; refusing to overwrite a key") from None
    except OSError as e:
        raise BundleError(f"{e.filename or private_path}: cannot write the key: {e.strerror}") from None
    return private_path, pub_path


def load_private_key(source):
    """An ed25519 private key from a PEM file, PEM bytes or a key object; BundleError naming the file."""
    return _load_key(source, private=True)


def _load_key(source, private: bool):
    serialization, ed25519 = _crypto()
    kind = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if isinstance(source, kind):
        return source
    data = source if isinstance(source, bytes) else Path(source).read_bytes() if Path(source).is_file() else None
    if data is None:
        raise BundleError(f"{source}: no such key file")
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as e:
        raise BundleError(f"{source}: not a PEM {'private' if private else 'public'} key ({e})") from None
    if not isinstance(key, kind):
        raise BundleError(f"{source}: not an ed25519 key")
    return key


def sign_bundle(root: Path, private_key) -> Path:
    """Sign manifest.json (which holds every file's sha256, so the signature covers the whole bundle)."""
    key = _load_key(private_key, private=True)
    sig = key.sign((Path(root) / MANIFEST).read_bytes())
    return write_bytes(Path(root) / SIGNATURE, sig)


def verify_signature(root: Path, trusted_keys) -> None:
    """BundleError unless manifest.sig is a valid signature of manifest.json by one of `trusted_keys`."""
    from cryptography.exceptions import InvalidSignature

    root = Path(root)
    keys = [_load_key(k, private=False) for k in trusted_keys]
    if not keys:
        raise BundleError("trusted_keys is empty: give at least one public key, or None to skip signatures")
    sig_path = root / SIGNATURE
    if not sig_path.is_file():
        raise BundleError(f"{root}: bundle is not signed ({SIGNATURE} missing) and trusted keys were given")
    sig, manifest = sig_path.read_bytes(), (root / MANIFEST).read_bytes()
    for key in keys:
        try:
            key.verify(sig, manifest)
            return
        except InvalidSignature:
            continue
    raise BundleError(f"{root}: signature does not match any trusted key (tampered manifest or unknown signer)")


# ---------------------------------------------------------------------------- archives

MAX_ARCHIVE_BYTES = 8 << 30


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    """A bundle packed as an archive (package --tar), which load() unpacks with extract_archive."""
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def extract_archive(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a bundle .tar.gz into `dest` safely: regular files and directories only, no absolute
    paths, no '..', no links or devices, bounded size. Returns the bundle directory inside `dest`."""
    import tarfile

    archive, dest = Path(archive), Path(dest)
    try:
        tf = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as e:
        raise BundleError(f"{archive}: not a readable bundle archive ({e})") from None
    with tf:
        members, total, tops = [], 0, set()
        for m in tf.getmembers():
            name = m.name
            parts = Path(name).parts
            if name.startswith("/") or ".." in parts or "\\" in name or not parts:
                raise BundleError(f"{archive}: unsafe path {name!r} in archive")
            if not (m.isfile() or m.isdir()):
                raise BundleError(f"{archive}: {name!r} is a link or special file; bundles hold regular files only")
            total += m.size
            if total > MAX_ARCHIVE_BYTES:
                raise BundleError(f"{archive}: archive unpacks to more than {MAX_ARCHIVE_BYTES >> 30} GiB")
            tops.add(parts[0])
            members.append(m)
        if len(tops) != 1:
            raise BundleError(f"{archive}: expected one bundle directory at the top, found {sorted(tops)[:5]}")
        dest.mkdir(parents=True, exist_ok=True)
        for m in members:
            target = dest / m.name
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            with open(target, "wb") as f:  # our own copy: no modes, owners or times from the archive
                while chunk := src.read(1 << 20):
                    f.write(chunk)
    return dest / tops.pop()
