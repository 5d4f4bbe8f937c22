#!/usr/bin/env bash
# Builds the image switchyard:${TAG:-dev}: compiles the switchyard binary statically (glibc with
# crt-static; no musl toolchain is needed), strips it, and builds docker/Dockerfile FROM scratch.
# Prints the image's size.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-dev}
TARGET=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build --release --locked --target "$TARGET" -p switchyard --bin switchyard
strip -o docker/switchyard "target/$TARGET/release/switchyard"
# The image must hold a binary that runs with no library at all.
if ldd docker/switchyard 2>&1 | grep -q '=>'; then
  echo "docker/switchyard is dynamically linked" >&2
  exit 1
fi
docker build -q -t "switchyard:$TAG" docker >/dev/null
echo "switchyard:$TAG $(docker image inspect -f '{{.Size}}' "switchyard:$TAG" | awk '{printf "%.1f MB", $1/1e6}')"
