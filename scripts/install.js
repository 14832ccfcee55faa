#!/usr/bin/env node
'use strict';
// The package's `install` script. It must never fail an app's `npm install`: a platform without
// a binary still has the app's own egg-cluster / @eggjs/cluster, which index.js falls back to.
//
// 1. This repo's own checkout (`npm install` for development, CI): the dev build, `npm run build`,
//    failing loudly as any build does, and egg 4.1's tools for the tests (__test__/egg41).
// 2. A prebuilt binary loads (the platform package npm picked by os/cpu/libc, or a local .node):
//    one line, exit 0.
// 3. Linux and `cargo` on PATH: build from source into a temporary CARGO_TARGET_DIR outside the
//    package (no target/ left in node_modules), copy the library where the loader looks for it.
// 4. Otherwise: one line saying what will be used instead, exit 0.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const say = line => console.log(`egg-cluster-rs: ${line}`);
const FALLBACK = 'the app\'s own egg-cluster (egg 3) / @eggjs/cluster (egg 4) master will be used (see the platforms table in the README)';

// npm sets INIT_CWD to where `npm install` was typed: the package's own directory in a clone,
// the app's directory when the package is a dependency.
function isDevCheckout() {
  if (process.env.EGG_CLUSTER_RS_INSTALL === 'user') return false;
  if (!fs.existsSync(path.join(root, '.git'))) return false;
  const initCwd = process.env.INIT_CWD;
  return !initCwd || path.resolve(initCwd) === path.resolve(root);
}

// The suffix napi-rs's loader uses for the local file: egg-cluster-rs.<suffix>.node.
function platformSuffix() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const glibc = process.report?.getReport().header.glibcVersionRuntime;
    return `linux-${arch}-${glibc ? 'gnu' : 'musl'}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

// In a child: a binary that crashes while loading must not take npm down with it.
function probe() {
  const r = spawnSync(process.execPath, [ '-e', 'require("./native.js")' ], {
    cwd: root, encoding: 'utf8', timeout: 30000,
  });
  return r.status === 0;
}

function hasCargo() {
  const r = spawnSync('cargo', [ '--version' ], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function buildFromSource(suffix) {
  const targetDir = fs.mkdtempSync(path.join(os.tmpdir(), 'egg-cluster-rs-build-'));
  try {
    const r = spawnSync('cargo', [ 'build', '--release', '--lib', '--manifest-path', path.join(root, 'Cargo.toml') ], {
      cwd: root,
      stdio: [ 'ignore', 'inherit', 'inherit' ],
      env: { ...process.env, CARGO_TARGET_DIR: targetDir },
    });
    if (r.status !== 0) {
      return `cargo build failed (${r.error ? r.error.message : `exit ${r.status}`}; its output is above)`;
    }
    const lib = path.join(targetDir, 'release', 'libegg_cluster_rs.so');
    fs.copyFileSync(lib, path.join(root, `egg-cluster-rs.${suffix}.node`));
    return null;
  } catch (err) {
    return err.message;
  } finally {
    fs.rmSync(targetDir, { recursive: true, force: true });
  }
}

function main() {
  if (isDevCheckout()) {
    // The repo's own clone: the dev build, as `npm run build` does; a failure fails the install.
    const r = spawnSync('npm', [ 'run', 'build' ], { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) {
      console.error('egg-cluster-rs: the dev build (`npm run build`) failed; it needs Rust (cargo, rustc) and the dev dependencies (`npm install` in this clone)');
      return r.status ?? 1;
    }
    // egg 4.1's world for its fixtures, apart from the root's egg 3/4 (its tools' peer ranges
    // exclude them): __test__/egg41/node_modules, from its own lockfile.
    const w = spawnSync('npm', [ 'ci', '--no-audit', '--no-fund', '--loglevel=error' ], {
      cwd: path.join(root, '__test__/egg41'), stdio: 'inherit',
    });
    if (w.status !== 0) console.error('egg-cluster-rs: `npm ci` in __test__/egg41 (egg 4.1 for the tests) failed');
    return w.status ?? 1;
  }

  const suffix = platformSuffix();
  if (probe()) {
    say(`native master ready (${suffix})`);
    return 0;
  }
  if (process.platform !== 'linux') {
    say(`no native master on ${suffix} (it is Linux-only); ${FALLBACK}`);
    return 0;
  }
  const cargo = hasCargo();
  if (!cargo) {
    say(`no prebuilt binary for ${suffix} and no cargo on PATH to build one; ${FALLBACK}`);
    return 0;
  }
  say(`no prebuilt binary for ${suffix}; building from source with ${cargo} (a few minutes)`);
  const failure = buildFromSource(suffix);
  if (failure) {
    say(`the source build failed: ${failure}; ${FALLBACK}. To retry: cd ${root} && node scripts/install.js`);
    return 0;
  }
  if (!probe()) {
    say(`built egg-cluster-rs.${suffix}.node but it does not load (run \`node -e "require('${path.join(root, 'native.js')}')"\` for the reason); ${FALLBACK}`);
    return 0;
  }
  say(`native master built from source (egg-cluster-rs.${suffix}.node)`);
  return 0;
}

process.exitCode = main();
