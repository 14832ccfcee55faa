#!/usr/bin/env bash
# The release binary for linux-x64-gnu, linked against glibc 2.17 with napi-rs's cross toolchain
# (`napi build --use-napi-cross`, a gcc + glibc 2.17 sysroot from the npm registry), then checked
# with scripts/check-glibc.js. The host build links against the host's glibc and would not load
# on older distributions; this one is what goes into npm/linux-x64-gnu.
#
# The toolchain is unpacked here rather than by the CLI, for two reasons: the CLI's
# @napi-rs/cross-toolchain (1.0.5) asks for @napi-rs/cross-toolchain-x64-target-x86_64 at its own
# version, which was never published (1.0.0 is the latest), and it unpacks with @napi-rs/lzma,
# whose binary npm skips on Node < 22.20. Once ~/.napi-rs/cross-toolchain/<version>/<triple>/
# package.json exists, the CLI uses that directory as is.
set -euo pipefail
cd "$(dirname "$0")/.."

triple=x86_64-unknown-linux-gnu
# The directory the CLI looks in is named after the version of ITS @napi-rs/cross-toolchain.
version=$(node -p "require(require.resolve('@napi-rs/cross-toolchain/package.json', { paths: [ require('path').dirname(require.resolve('@napi-rs/cli/package.json')) ] })).version")
target_pkg=@napi-rs/cross-toolchain-x64-target-x86_64@1.0.0
toolchain="$HOME/.napi-rs/cross-toolchain/$version/$triple"
if [ ! -f "$toolchain/package.json" ]; then
  echo "+ unpacking $target_pkg into $toolchain"
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  (cd "$scratch" && npm pack --silent "$target_pkg" >/dev/null)
  tar xzf "$scratch"/*.tgz -C "$scratch"
  rm -rf "$toolchain" && mkdir -p "$toolchain"
  tar xJf "$scratch/package/$triple.tar.xz" -C "$toolchain"
fi

out=${OUT_DIR:-npm/linux-x64-gnu}
# A target dir of its own: the cross toolchain's objects must not mix with the host build's.
npx napi build --platform --release --target "$triple" --use-napi-cross --no-js \
  --target-dir target/napi-cross --output-dir "$out" --strip
node scripts/check-glibc.js "$out/egg-cluster-rs.linux-x64-gnu.node" 2.17
