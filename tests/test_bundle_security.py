"""Bundles from untrusted sources: safe archive extraction, ed25519 signatures, no code from a bundle."""
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest

import edgesdk
from edgesdk.device.bundle import MANIFEST, SIGNATURE, extract_archive, generate_key
from edgesdk.errors import BundleError
from edgesdk.device.preprocess import read_image


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return generate_key(d / "signer"), generate_key(d / "stranger")


@pytest.fixture(scope="module")
def signed(tmp_path_factory, effnet_onnx, calib_images, keys):
    (priv, _), _ = keys
    out = tmp_path_factory.mktemp("b") / "ort"
    return edgesdk.package(effnet_onnx, "x86-onnxruntime", out, calib=calib_images[:3], tar=True, sign=priv).out


def test_signed_bundle_loads_with_its_key_only(signed, keys, tmp_path, real_images):
    (_, pub), (_, stranger) = keys
    with edgesdk.load(signed, trusted_keys=[pub]) as m:
        assert m(read_image(real_images["skimage_coffee"]))["topk"][0]["label"].startswith("espresso")
    with pytest.raises(BundleError, match="does not match any trusted key"):
        edgesdk.load(signed, trusted_keys=[stranger])
    unsigned = tmp_path / "unsigned"
    shutil.copytree(signed, unsigned)
    (unsigned / SIGNATURE).unlink()
    edgesdk.load(unsigned).close()  # no keys asked: fine
    with pytest.raises(BundleError, match="not signed"):
        edgesdk.load(unsigned, trusted_keys=[pub])


def test_resigned_manifest_edit_is_refused(signed, keys, tmp_path):
    (_, pub), _ = keys
    copy = tmp_path / "c"
    shutil.copytree(signed, copy)
    m = json.loads((copy / MANIFEST).read_text())
    m["postprocess"] = {"kind": "none"}
    (copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="signature"):
        edgesdk.load(copy, trusted_keys=[pub])


def test_load_from_archive(signed, keys):
    (_, pub), _ = keys
    tar = signed.with_name(signed.name + ".tar.gz")
    m = edgesdk.load(tar, trusted_keys=[pub])
    unpacked = m.root
    assert unpacked.is_dir() and m.check().passed
    m.close()
    assert not unpacked.exists()  # the temporary copy goes with the model


def _tar(tmp_path, entries):
    """entries: (TarInfo-configuring callable or name, data) -> a .tar.gz path"""
    p = tmp_path / "evil.tar.gz"
    with tarfile.open(p, "w:gz") as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return p


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("entries,match", [
    ([_file("/etc/evil")], "unsafe path"),
    ([_file("b/../../evil")], "unsafe path"),
    ([_link("b/manifest.json", "/etc/passwd")], "link or special"),
    ([_link("b/x", "b/manifest.json", tarfile.LNKTYPE)], "link or special"),
    ([_link("b/dev", "", tarfile.CHRTYPE)], "link or special"),
    ([_file("a/x"), _file("b/y")], "one bundle directory"),
])
def test_hostile_archives_refused(tmp_path, entries, match):
    dest = tmp_path / "dest"
    with pytest.raises(BundleError, match=match):
        extract_archive(_tar(tmp_path, entries), dest)
    assert not dest.exists() or not any(dest.rglob("*"))
    assert not (tmp_path.parent / "evil").exists()


def test_not_an_archive(tmp_path):
    p = tmp_path / "x.tar.gz"
    p.write_bytes(b"garbage")
    with pytest.raises(BundleError, match="not a readable bundle archive"):
        edgesdk.load(p)


def test_manifest_paths_cannot_escape(signed, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(signed, copy)
    m = json.loads((copy / MANIFEST).read_text())
    m["files"]["../outside"] = "0" * 64
    (copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="unsafe file path"):
        edgesdk.load(copy)


def test_keygen_and_sign_cli(tmp_path, effnet_onnx, calib_images):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    key = tmp_path / "k"
    res = subprocess.run([sys.executable, "-m", "edgesdk", "keygen", str(key)], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and key.is_file() and (tmp_path / "k.pub").is_file()
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    res = subprocess.run([sys.executable, "-m", "edgesdk", "keygen", str(key)], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "refusing" in res.stderr
