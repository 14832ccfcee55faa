'use strict';

// Where no native binary loads (macOS, Windows, an unsupported libc), startCluster/createCluster
// start the app's own JS master (egg-cluster for egg 3, @eggjs/cluster for egg 4) with one warning
// line; EGG_CLUSTER_RS_REQUIRE_NATIVE, native-only options and the native controls are errors.
// Each test runs a copy of this package without any .node file, whose napi loader finds none.

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const {
  ROOT, FIXTURES, TMP, copyFixture, getFreePort, runScript, findProcesses, waitDead, get, track,
} = require('./helper');

const RUNNER = path.join(FIXTURES, 'fallback_start.js');
const EGG_SCRIPTS = require.resolve('egg-scripts/bin/egg-scripts.js');
const EGG4 = path.join(ROOT, 'node_modules/egg4');
const EGG_CLUSTER_VERSION = require('egg-cluster/package.json').version;
const EGGJS_CLUSTER_VERSION = require('@eggjs/cluster/package.json').version;
// the loader's first attempt on this machine: the platform's own file
const REASON = String.raw`no native binary loads on linux-x64 \(Cannot find native binding: Cannot find module '\./egg-cluster-rs\.linux-x64-(gnu|musl)\.node'\)`;
const WARNING = new RegExp(String.raw`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARN \d+ \[egg-cluster-rs\] ${REASON}: starting the JS master `, 'mg');

let pkg;

/** a copy of the package as npm would install it on a platform without a binary */
function copyPackage() {
  const dir = path.join(TMP, `fallback-pkg-${process.pid}-${Date.now()}`);
  fs.mkdirSync(dir, { recursive: true });
  for (const name of [ 'index.js', 'lib', 'bin', 'package.json', 'native.js' ]) {
    fs.cpSync(path.join(ROOT, name), path.join(dir, name), { recursive: true });
  }
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  const nodes = [];
  (function walk(d) {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.name === 'node_modules') continue;
      if (e.isDirectory()) walk(path.join(d, e.name));
      else if (e.name.endsWith('.node')) nodes.push(path.join(d, e.name));
    }
  })(dir);
  assert.deepStrictEqual(nodes, []);
  return dir;
}

async function start(fixture, opts = {}, env = {}) {
  const baseDir = fixture.startsWith('/') ? fixture : copyFixture(fixture);
  const options = { baseDir, workers: 1, port: await getFreePort(), ...opts };
  const m = runScript(RUNNER, [ JSON.stringify(options), pkg ], { marker: baseDir, home: baseDir, env, cwd: ROOT });
  m.options = options;
  return m;
}

function warnings(m) {
  return m.output.match(WARNING) || [];
}

describe('fallback: no native binary', () => {
  before(() => {
    pkg = copyPackage();
  });
  after(() => {
    fs.rmSync(pkg, { recursive: true, force: true });
  });

  it('egg 3: egg-cluster serves, one warning naming the reason, native controls refused', async () => {
    const m = await start('basic', {}, { EGG_CLUSTER_RS_REFORK_LIMIT: '5' });
    const ready = await m.waitReady(90000);
    assert.strictEqual(ready.port, m.options.port);
    const res = await get(m.options.port, '/');
    assert.strictEqual(res.status, 200);
    assert.strictEqual(res.body, 'hi, egg');
    await m.waitFor('startCluster-callback');
    await m.waitFor('startCluster-resolved');
    assert.strictEqual(warnings(m).length, 1, m.output);
    assert.match(m.output, new RegExp(`starting the JS master egg-cluster ${EGG_CLUSTER_VERSION} instead \\(ignoring EGG_CLUSTER_RS_REFORK_LIMIT\\)\\n`));
    assert.match(m.output, /\[master\] egg started on http:\/\/127\.0\.0\.1:\d+/);
    const refused = await m.waitForMessages('runner-refused', 4);
    assert.deepStrictEqual(refused.map(msg => msg.data.what).sort(), [ 'reload', 'scale', 'status', 'upgrade' ]);
    for (const { data } of refused) {
      assert.strictEqual(data.code, 'ERR_EGG_CLUSTER_NATIVE_ONLY');
      assert.match(data.message, new RegExp(`^${data.what}\\(\\) needs the native master, and ${REASON}$`));
    }
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());
  });

  it('egg 4: @eggjs/cluster serves, its workers run egg 4', async () => {
    const m = await start('egg4-app');
    await m.waitReady(90000);
    const res = await get(m.options.port, '/');
    assert.strictEqual(res.status, 200, res.body);
    assert.strictEqual(JSON.parse(res.body).egg, EGG4);
    assert.strictEqual(warnings(m).length, 1, m.output);
    assert.match(m.output, new RegExp(`starting the JS master @eggjs/cluster ${EGGJS_CLUSTER_VERSION.replace(/\./g, '\\.')} instead\\n`));
    assert.match(m.output, /\[master\] egg version 4\./);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());
  });

  it('egg-scripts start --framework=<the package>: the workers load egg through it', async () => {
    const baseDir = copyFixture('basic');
    const port = await getFreePort();
    const title = `egg-cluster-rs-fallback-${process.pid}-${Date.now()}`;
    const stdoutLog = path.join(baseDir, 'logs/master-stdout.log');
    const started = runScript(EGG_SCRIPTS, [
      'start', '--daemon', `--framework=${pkg}`, `--title=${title}`, `--port=${port}`, '--workers=1',
      `--stdout=${stdoutLog}`, `--stderr=${path.join(baseDir, 'logs/master-stderr.log')}`, baseDir,
    ], { marker: baseDir, home: baseDir });
    assert.deepStrictEqual(await started.waitExit(120000), { code: 0, signal: null }, started.tail());
    const res = await get(port, '/');
    assert.strictEqual(res.body, 'hi, egg');
    const log = fs.readFileSync(stdoutLog, 'utf8');
    assert.strictEqual((log.match(WARNING) || []).length, 1, log);
    assert.match(log, /\[master\] egg-cluster-rs started on/);
    const procs = findProcesses(baseDir);
    const stop = runScript(EGG_SCRIPTS, [ 'stop', `--title=${title}`, '--timeout=1000' ], { marker: title, home: baseDir });
    assert.strictEqual((await stop.waitExit(60000)).code, 0, stop.tail());
    await waitDead(procs.map(p => p.pid), 10000);
  });

  it('egg-mock 5: mm.cluster({ customEgg: <the package> }) on egg 3', async () => {
    const mm = require('egg-mock');
    const baseDir = track(copyFixture('basic'));
    const app = mm.cluster({ baseDir, customEgg: pkg, workers: 1, port: await getFreePort(), cache: false, coverage: false });
    try {
      await app.ready();
      await app.httpRequest().get('/').expect(200).expect('hi, egg');
      assert.strictEqual((app.stdout.match(WARNING) || []).length, 1, app.stdout);
      assert.match(app.stdout, /starting the JS master egg-cluster /);
    } finally {
      await app.close();
    }
    await waitDead(findProcesses(baseDir).map(p => p.pid), 10000);
  });

  it('@eggjs/mock 6: mm.cluster({ framework: <the package> }) runs on the app\'s egg 4', async () => {
    const { mm } = require('@eggjs/mock');
    // as an egg 4 app installed from npm: egg 4 is its node_modules/egg (the package's own egg
    // is egg 3, a devDependency, and must not be picked)
    const baseDir = track(copyFixture('egg4-app'));
    fs.mkdirSync(path.join(baseDir, 'node_modules'));
    fs.symlinkSync(EGG4, path.join(baseDir, 'node_modules/egg'));
    const app = mm.cluster({ baseDir, framework: pkg, workers: 1, port: await getFreePort(), cache: false, coverage: false });
    try {
      await app.ready();
      await app.httpRequest().get('/').expect(200).expect(res => assert.strictEqual(res.body.egg, pkg));
      assert.strictEqual((app.stdout.match(WARNING) || []).length, 1, app.stdout);
      assert.match(app.stdout, /starting the JS master @eggjs\/cluster /);
      assert.match(app.stdout, /\[master\] egg-cluster-rs started on/);
    } finally {
      await app.close();
    }
    await waitDead(findProcesses(baseDir).map(p => p.pid), 10000);
  });

  it('EGG_CLUSTER_RS_REQUIRE_NATIVE=1 makes it an error: egg-scripts start exits non-zero', async () => {
    const baseDir = copyFixture('basic');
    const start = runScript(EGG_SCRIPTS, [ 'start', `--framework=${pkg}`, `--port=${await getFreePort()}`, '--workers=1', baseDir ], {
      marker: baseDir, home: baseDir, env: { EGG_CLUSTER_RS_REQUIRE_NATIVE: '1' },
    });
    assert.strictEqual((await start.waitExit(60000)).code, 1, start.tail());
    assert.match(start.stderr, new RegExp(`^Error: EGG_CLUSTER_RS_REQUIRE_NATIVE is set and ${REASON}$`, 'm'));
    assert.match(start.stderr, /code: 'ERR_EGG_CLUSTER_NO_NATIVE'/);
    assert.deepStrictEqual(warnings(start), []);
    assert.deepStrictEqual(findProcesses(baseDir), []);
  });

  it('a native-only option is an error naming it', async () => {
    const m = await start('basic', { maxMemoryRestart: '512M', metrics: { port: 0 } });
    assert.strictEqual((await m.waitExit(30000)).code, 3, m.tail());
    assert.match(m.stderr, new RegExp(
      `^createCluster threw ERR_EGG_CLUSTER_NATIVE_ONLY: options\\.maxMemoryRestart, options\\.metrics need the native master, and ${REASON}; `, 'm'));
    const t = await start('basic', { startMode: 'worker_threads', sticky: true });
    assert.strictEqual((await t.waitExit(30000)).code, 3, t.tail());
    assert.match(t.stderr, /ERR_EGG_CLUSTER_NATIVE_ONLY: options\.sticky with startMode 'worker_threads' needs the native master/);
  });

  // `node -e "require('egg-cluster-rs').startCluster(...)"` (docs/operations.md's systemd unit):
  // the JS masters fork with this process's execArgv, and an app worker that inherited `-e <code>`
  // would run the launcher again (a second master in it) instead of its worker file. fork('-e',
  // [code]) runs `node -e code`, with an IPC channel to this test.
  for (const [ flag, fixture, dialect ] of [ [ '-e', 'basic', 'egg-cluster' ], [ '-p', 'basic', 'egg-cluster' ], [ '-e', 'egg4-app', '@eggjs/cluster' ], [ '-p', 'egg4-app', '@eggjs/cluster' ] ]) {
    it(`node ${flag} "...startCluster(...)" on ${dialect}: the workers do not inherit ${flag}`, async function() {
      this.timeout(120000);
      const baseDir = copyFixture(fixture);
      const options = { baseDir, workers: 1, port: await getFreePort() };
      const code = `require(${JSON.stringify(pkg)}).startCluster(${JSON.stringify(options)})`;
      const m = runScript(flag, [ code ], { marker: baseDir, home: baseDir, cwd: ROOT });
      await m.waitReady(90000);
      assert.strictEqual((await get(options.port, '/')).status, 200, m.tail());
      assert.match(m.output, new RegExp(`starting the JS master ${dialect} `));
      const workers = findProcesses(baseDir).filter(p => p.pid !== m.pid);
      assert.strictEqual(workers.length, 2, JSON.stringify(workers));
      for (const w of workers) assert(!w.cmdline.includes('startCluster'), w.cmdline);
      m.kill('SIGTERM');
      assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());
      await waitDead(workers.map(p => p.pid), 10000);
    });
  }

  it('neither a binary nor a JS master: the error names both', async () => {
    // an app whose egg depends on no cluster package
    const baseDir = copyFixture('basic');
    const egg = path.join(baseDir, 'node_modules/egg');
    fs.mkdirSync(egg, { recursive: true });
    fs.writeFileSync(path.join(egg, 'package.json'), JSON.stringify({ name: 'egg', version: '3.99.0', dependencies: {} }));
    const m = await start(baseDir);
    assert.strictEqual((await m.waitExit(30000)).code, 3, m.tail());
    assert.match(m.stderr, new RegExp(`^createCluster threw ERR_EGG_CLUSTER_NO_MASTER: no cluster master can start: ${REASON}, ` +
      `and no JS master was found \\(egg 3\\.99\\.0 at ${egg.replace(/[.]/g, '\\.')} depends on neither egg-cluster nor @eggjs/cluster\\)`, 'm'));
  });

  it('the CLI says reload, scale and status need the native master', async () => {
    for (const args of [ [ 'status' ], [ 'reload' ], [ 'scale', 'up' ] ]) {
      const cli = runScript(path.join(pkg, 'bin/egg-cluster-rs.js'), args, { marker: pkg, home: TMP });
      assert.strictEqual((await cli.waitExit(30000)).code, 1, cli.tail());
      assert.match(cli.stderr, new RegExp(`^egg-cluster-rs: ${args[0]} needs the native master, and ${REASON}: masters here run the JS master`));
    }
  });
});
