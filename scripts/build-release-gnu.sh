#!/usr/bin/env bash
# Usage: scripts/build-release-gnu.sh [x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu]
# The release binary for a linux gnu target, linked against glibc 2.17 with napi-rs's cross
# toolchain (`napi build --use-napi-cross`: gcc and a glibc 2.17 sysroot from the npm registry;
# an x64 Linux host), then checked with scripts/check-glibc.js. The host build links against the
# host's glibc and would not load on older distributions; this one goes into npm/<platform>/
# (or OUT_DIR).
#
# The toolchain is unpacked here rather than by the CLI, for two reasons: the CLI's
# @napi-rs/cross-toolchain (1.0.5) asks for the toolchain package at its own version, which was
# never published for these targets (x86_64: 1.0.0, aarch64: 1.0.3 are the latest), and it
# unpacks with @napi-rs/lzma, whose binary npm skips on Node < 22.20. Once
# ~/.napi-rs/cross-toolchain/<version>/<triple>/package.json exists, the CLI uses it as is.
set -euo pipefail
cd "$(dirname "$0")/.."

triple=${1:-x86_64-unknown-linux-gnu}
case "$triple" in
  x86_64-unknown-linux-gnu) toolchain_pkg=@napi-rs/cross-toolchain-x64-target-x86_64@1.0.0 platform=linux-x64-gnu ;;
  aarch64-unknown-linux-gnu) toolchain_pkg=@napi-rs/cross-toolchain-x64-target-aarch64@1.0.3 platform=linux-arm64-gnu ;;
  *) echo "build-release-gnu: unsupported target $triple (x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu)" >&2; exit 2 ;;
esac
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "build-release-gnu: needs an x86_64 Linux host (the toolchain packages used here run there), not $(uname -sm)" >&2
  exit 2
fi

scratch= built=
trap 'rm -rf ${scratch:+"$scratch"} ${built:+"$built"}' EXIT

# The directory the CLI looks in is named after the version of ITS @napi-rs/cross-toolchain.
version=$(node -p "require(require.resolve('@napi-rs/cross-toolchain/package.json', { paths: [ require('path').dirname(require.resolve('@napi-rs/cli/package.json')) ] })).version")
toolchain="$HOME/.napi-rs/cross-toolchain/$version/$triple"
if [ ! -f "$toolchain/package.json" ]; then
  echo "+ unpacking $toolchain_pkg into $toolchain"
  scratch=$(mktemp -d)
  (cd "$scratch" && npm pack --silent "$toolchain_pkg" >/dev/null)
  tar xzf "$scratch"/*.tgz -C "$scratch"
  rm -rf "$toolchain" && mkdir -p "$toolchain"
  tar xJf "$scratch/package/$triple.tar.xz" -C "$toolchain"
fi

out=${OUT_DIR:-npm/$platform}
# Built into a scratch dir, then only the binary is copied: napi build also writes an index.d.ts
# into its output dir, which must not land in npm/<platform> or over the package's own.
built=$(mktemp -d)
# A target dir of its own: the cross toolchain's objects must not mix with the host build's.
npx napi build --platform --release --target "$triple" --use-napi-cross --no-js \
  --target-dir target/napi-cross --output-dir "$built"
mkdir -p "$out"
cp "$built/egg-cluster-rs.$platform.node" "$out/"
node scripts/check-glibc.js "$out/egg-cluster-rs.$platform.node" 2.17
