#!/bin/sh
# Image build step: a venv at /opt/venv with exactly the pinned dependencies of pyproject.toml
# (the base list plus the extras named: `serve`, or `train cpu`, `train gpu`; an extra that names
# another, e.g. train's "mura[serve]", brings that one's pins). Used by docker/Dockerfile's builder stages.
set -eu
cd "$(dirname "$0")"  # pyproject.toml is copied next to this script
# A CA bundle mounted at /etc/xdg/pip (docker/setup-podman.sh, behind an intercepting proxy) is used if present.
if [ -f /etc/xdg/pip/ca.crt ]; then export SSL_CERT_FILE=/etc/xdg/pip/ca.crt; fi
python3 -m venv /opt/venv
/opt/venv/bin/pip install --no-cache-dir -q 'uv==0.13.9'
/opt/venv/bin/python - "$@" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]


def pins(names):
    for name in names:
        for req in extras[name]:
            if req.startswith(project["name"] + "["):
                yield from pins(req.split("[", 1)[1].rstrip("]").split(","))
            else:
                yield req


open("/tmp/requirements.txt", "w").write("\n".join(dict.fromkeys(project["dependencies"] + list(pins(sys.argv[1:])))) + "\n")
PY
/opt/venv/bin/uv pip install --no-cache --compile-bytecode --python /opt/venv/bin/python -r /tmp/requirements.txt
/opt/venv/bin/pip uninstall -y -q uv
rm -f /tmp/requirements.txt /tmp/uv-*.lock
# TensorFlow's C++ headers (~290 MB), when TensorFlow is installed, are for building extensions, never used at run time.
rm -rf /opt/venv/lib/python3.11/site-packages/tensorflow/include
