#!/usr/bin/env python3
"""Packs a root file system directory into a one-layer OCI image archive that
`ctr images import` loads (no daemon, no registry).

    mkimage.py ROOTFS NAME:TAG OUT.tar [--entrypoint A,B] [--cmd A,B] [--user U:G]

The layer is reproducible: owners are root unless --keep-owners, times are 0,
entries are sorted. The image name is in the index's
io.containerd.image.name annotation.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_of(rootfs, keep_owners):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs + files):
                path = os.path.join(top, name)
                info = tar.gettarinfo(path, os.path.relpath(path, rootfs))
                info.mtime = 0
                info.uname = info.gname = ""
                if not keep_owners:
                    info.uid = info.gid = 0
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return out.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rootfs")
    ap.add_argument("name")
    ap.add_argument("out")
    ap.add_argument("--entrypoint", default="")
    ap.add_argument("--cmd", default="")
    ap.add_argument("--user", default="")
    ap.add_argument("--keep-owners", action="store_true")
    a = ap.parse_args()
    if ":" not in a.name.rsplit("/", 1)[-1]:
        ap.error("NAME must carry a tag (NAME:TAG): " + a.name)

    raw = layer_of(a.rootfs, a.keep_owners)
    gz = gzip.compress(raw, compresslevel=6, mtime=0)
    config = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    image_config = {"Env": sorted(config), "WorkingDir": "/"}
    if a.entrypoint:
        image_config["Entrypoint"] = a.entrypoint.split(",")
    if a.cmd:
        image_config["Cmd"] = a.cmd.split(",")
    if a.user:
        image_config["User"] = a.user
    cfg = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [digest(raw)]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/k8s.d/mkimage.py"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(cfg), "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest(gz), "size": len(gz)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": digest(manifest), "size": len(manifest),
                       "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": a.name,
                                       "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[1]}}],
    }, sort_keys=True).encode()

    tmp = a.out + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for blob in (cfg, manifest, gz):
            add("blobs/sha256/" + digest(blob)[len("sha256:"):], blob)
    os.replace(tmp, a.out)
    print("%s %s layer %d bytes gzipped" % (a.name, digest(manifest), len(gz)))


if __name__ == "__main__":
    main()
