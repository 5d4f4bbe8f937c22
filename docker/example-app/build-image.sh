#!/usr/bin/env bash
# Builds switchyard-example-app:${TAG:-dev}: a Python service that knows nothing of Switchyard
# (tests/python/agent_app.py with OpenFeature's flagd provider from PyPI), for the agent example
# (docker/agent-example.yml). No base image is pulled: the image is FROM scratch with Debian's
# python3 (the host's /usr/bin/python3.11 and its standard library, from Debian's packages), the
# shared libraries they and the provider's native modules link, and the provider installed by
# pip. Prints the image's size.
set -euo pipefail
cd "$(dirname "$0")"
TAG=${TAG:-dev}
PY=${PYTHON_BIN:-/usr/bin/python3.11}
VERSION=$("$PY" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root/usr/bin" "$root/usr/lib" "$root/app" "$root/tmp"
cp "$PY" "$root/usr/bin/python3"
# The standard library, without its tests and caches.
cp -r "/usr/lib/python$VERSION" "$root/usr/lib/"
rm -rf "$root/usr/lib/python$VERSION/test" "$root/usr/lib/python$VERSION"/{idlelib,tkinter,turtledemo,ensurepip}
find "$root" -name __pycache__ -type d -prune -exec rm -rf {} +
# The app and its dependencies (no compiled caches: the image is read-only to its user).
"$PY" -m pip install --quiet --no-compile --target "$root/app/site" -r ../../tests/python/requirements.txt
cp ../../tests/python/agent_app.py "$root/app/app.py"
# Every shared library the interpreter and the native modules need, at the paths they link.
{
  ldd "$PY"
  find "$root" -name '*.so*' -type f -exec ldd {} \; 2>/dev/null
} | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp Dockerfile "$root/"
docker build -q -t "switchyard-example-app:$TAG" "$root" >/dev/null
echo "switchyard-example-app:$TAG $(docker image inspect -f '{{.Size}}' "switchyard-example-app:$TAG" | awk '{printf "%.1f MB", $1/1e6}')"
