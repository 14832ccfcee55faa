'use strict';

// The package's install script (scripts/install.js) as npm runs it in an app's node_modules:
// it never fails, and says in one line what the app gets. The packed package installed into
// real egg apps is scripts/pack-test.sh's part.
const assert = require('assert');
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { ROOT } = require('./helper');

const INSTALL = path.join(ROOT, 'scripts/install.js');
const CHECK_GLIBC = path.join(ROOT, 'scripts/check-glibc.js');
const glibc = process.report.getReport().header.glibcVersionRuntime;
const SUFFIX = `linux-${process.arch}-${glibc ? 'gnu' : 'musl'}`;
const HOST_BINARY = path.join(ROOT, `egg-cluster-rs.${SUFFIX}.node`);

// PATH without cargo/rustc: what the node Docker images and most servers have
const barePath = process.env.PATH.split(':')
  .filter(d => d && !fs.existsSync(path.join(d, 'cargo')) && !fs.existsSync(path.join(d, 'rustc')))
  .join(':');

const dirs = [];
// A copy of the package as npm unpacks it into an app (no .git, no binary unless given), under
// an app directory npm would name in INIT_CWD.
function installedCopy(binary) {
  const app = fs.mkdtempSync(path.join(os.tmpdir(), 'egg-cluster-rs-install-test-'));
  dirs.push(app);
  const pkg = path.join(app, 'node_modules/egg-cluster-rs');
  fs.mkdirSync(path.join(pkg, 'scripts'), { recursive: true });
  for (const f of [ 'package.json', 'native.js', 'Cargo.toml', 'scripts/install.js' ]) {
    fs.copyFileSync(path.join(ROOT, f), path.join(pkg, f));
  }
  if (binary) fs.writeFileSync(path.join(pkg, `egg-cluster-rs.${SUFFIX}.node`), binary);
  return { app, pkg };
}

function runInstall({ app, pkg }, env = {}) {
  return spawnSync(process.execPath, [ path.join(pkg, 'scripts/install.js') ], {
    cwd: pkg, encoding: 'utf8', timeout: 60000,
    env: { ...process.env, PATH: barePath, INIT_CWD: app, npm_lifecycle_event: 'install', ...env },
  });
}

describe('install', () => {
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  it('a binary that loads: one line, exit 0, nothing built', () => {
    const copy = installedCopy(fs.readFileSync(HOST_BINARY));
    const r = runInstall(copy);
    assert.strictEqual(r.status, 0, r.stderr);
    assert.strictEqual(r.stdout, `egg-cluster-rs: native master ready (${SUFFIX})\n`);
    assert.strictEqual(r.stderr, '');
    assert(!fs.existsSync(path.join(copy.pkg, 'target')));
  });

  it('no binary and no cargo: one line naming the platform and the fallback, exit 0', () => {
    const copy = installedCopy(null);
    const r = runInstall(copy);
    assert.strictEqual(r.status, 0, r.stderr);
    assert.strictEqual(r.stderr, '');
    const lines = r.stdout.split('\n').filter(Boolean);
    assert.strictEqual(lines.length, 1, r.stdout);
    assert.match(lines[0], new RegExp(`^egg-cluster-rs: no prebuilt binary for ${SUFFIX} and no cargo on PATH to build one; the app's own egg-cluster \\(egg 3\\) / @eggjs/cluster \\(egg 4\\) master will be used`));
  });

  it('a binary that cannot load (corrupt file) is probed in a child: exit 0 with the no-binary line', () => {
    const copy = installedCopy(Buffer.from('\x7fELF not really a shared object'));
    const r = runInstall(copy);
    assert.strictEqual(r.status, 0, r.stderr);
    assert.match(r.stdout, /^egg-cluster-rs: no prebuilt binary for .* and no cargo on PATH/);
  });

  it('a failed source build exits 0, says so and how to retry, and leaves no target/', () => {
    // a cargo that reports its version and then fails the build, as a broken toolchain would
    const copy = installedCopy(null);
    const bin = path.join(copy.app, 'bin');
    fs.mkdirSync(bin);
    fs.writeFileSync(path.join(bin, 'cargo'), '#!/bin/sh\n[ "$1" = --version ] && { echo "cargo 1.0.0 (broken)"; exit 0; }\necho "error: linker cc not found" >&2\nexit 101\n', { mode: 0o755 });
    const before = fs.readdirSync(os.tmpdir()).filter(f => f.startsWith('egg-cluster-rs-build-')).length;
    const r = runInstall(copy, { PATH: `${bin}:${barePath}` });
    assert.strictEqual(r.status, 0, r.stderr);
    const lines = r.stdout.split('\n').filter(Boolean);
    assert.match(lines[0], new RegExp(`^egg-cluster-rs: no prebuilt binary for ${SUFFIX}; building from source with cargo 1\\.0\\.0 \\(broken\\)`));
    assert.match(lines[1], /^egg-cluster-rs: the source build failed: cargo build failed \(exit 101; its output is above\); the app's own egg-cluster .* To retry: cd .* && node scripts\/install\.js$/);
    assert.match(r.stderr, /linker cc not found/);
    assert(!fs.existsSync(path.join(copy.pkg, 'target')));
    const after = fs.readdirSync(os.tmpdir()).filter(f => f.startsWith('egg-cluster-rs-build-')).length;
    assert.strictEqual(after, before, 'the temporary CARGO_TARGET_DIR is removed');
  });

  it('the committed loader is the one `napi build` generates (npm run build regenerates it)', () => {
    // npm test builds before mocha: a loader that differs from the committed one shows here
    const r = spawnSync('git', [ 'status', '--porcelain', '--', 'native.js', 'native.d.ts' ], { cwd: ROOT, encoding: 'utf8' });
    assert.strictEqual(r.status, 0, `this test needs the git checkout: ${r.stderr}`);
    assert.strictEqual(r.stdout, '', 'native.js / native.d.ts differ from the committed ones: commit the regenerated loader');
  });

  it('check-glibc names the symbols newer than the baseline and the newest needed', () => {
    const run = baseline => spawnSync(process.execPath, [ CHECK_GLIBC, HOST_BINARY, baseline ], { encoding: 'utf8' });
    const strict = run('2.2');
    const newest = /newest needed GLIBC_(\d+\.\d+(?:\.\d+)?) \((\S+)\)/.exec(strict.stdout);
    assert(newest, strict.stdout);
    // every build needs more than glibc 2.2 (memcpy@GLIBC_2.14 at least)
    assert.strictEqual(strict.status, 1, strict.stdout + strict.stderr);
    assert.match(strict.stderr, new RegExp(`  ${newest[2]} needs GLIBC_${newest[1].replace(/\./g, '\\.')}`));
    assert.match(strict.stderr, /symbol\(s\) newer than GLIBC_2\.2: build with scripts\/build-release-gnu\.sh/);
    const ok = run(newest[1]);
    assert.strictEqual(ok.status, 0, ok.stdout + ok.stderr);
    assert.strictEqual(ok.stderr, '');
  });
});
