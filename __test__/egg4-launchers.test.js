'use strict';

// egg 4 apps through egg 4's launchers with this package as the framework, and ESM apps.
// "This package as the framework" re-exports the app's egg: the test app gets egg 4 as its
// `node_modules/egg` (a symlink to the `egg4` alias), as an egg 4 app installed from npm has.

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const {
  REFERENCE, ROOT, copyFixture, getFreePort, runScript, findProcesses, waitDead, get, startMaster,
} = require('./helper');
const { EGG, probe, assertMasterWithoutEgg, keepFileHandles } = require('./launch');

const EGG4 = path.join(ROOT, 'node_modules/egg4');
const SCRIPTS4 = path.join(ROOT, 'node_modules/@eggjs/scripts/bin/run.js');

/**
 * A copy of `fixture` whose framework is this package, on egg 4.
 * @param {string} fixture -
 * @return {string} baseDir
 */
function onThisPackage(fixture) {
  const baseDir = copyFixture(fixture);
  const pkgFile = path.join(baseDir, 'package.json');
  const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
  pkg.egg = { framework: 'egg-cluster-rs' };
  fs.writeFileSync(pkgFile, JSON.stringify(pkg));
  fs.mkdirSync(path.join(baseDir, 'node_modules'));
  fs.symlinkSync(EGG4, path.join(baseDir, 'node_modules/egg'));
  fs.symlinkSync(ROOT, path.join(baseDir, 'node_modules/egg-cluster-rs'));
  return baseDir;
}

(REFERENCE ? describe.skip : describe)('egg 4: ESM apps', () => {
  it('an ESM app ("type": "module") on egg 4, with an ES module in `require`', async () => {
    const baseDir = copyFixture('egg4-esm');
    const m = await startMaster(null, { framework: EGG4, require: [ path.join(baseDir, 'preload.js') ] }, { baseDir });
    await m.waitReady(90000);
    await m.waitForMessages('esm-app-ready', 2);
    const res = await get(m.options.port, '/');
    assert.strictEqual(res.status, 200, res.body);
    const body = JSON.parse(res.body);
    assert.strictEqual(body.esm, true);
    assert.strictEqual(body.required, `file://${path.join(baseDir, 'preload.js')}`);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  it('an ESM app with this package as its framework runs on the app\'s egg 4', async () => {
    const baseDir = onThisPackage('egg4-esm');
    const m = await startMaster(null, {}, { baseDir, env: { EGG_SERVER_ENV: 'prod' } });
    await m.waitReady(90000);
    assert.match(m.output, /\[master\] =================== egg-cluster-rs start 🥚🥚🥚🥚 =====================/);
    // which egg runs under this package, where it was found, and the dialect
    const eggVersion = require(path.join(EGG4, 'package.json')).version;
    assert(m.lines(/\[master\] egg version /).some(l => l.endsWith(`[master] egg version ${eggVersion} from ${path.join(baseDir, 'node_modules/egg')}: egg 4 dialect (@eggjs/cluster's protocol)`)), m.tail());
    await m.waitForMessages('esm-app-ready', 2);
    const res = await get(m.options.port, '/');
    assert.strictEqual(res.status, 200, res.body);
    assert.strictEqual(JSON.parse(res.body).esm, true);
    for (const pid of m.workers().app) {
      assert.match(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /@eggjs\/cluster\/dist\/esm\/app_worker\.js/);
    }
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });
});

(REFERENCE ? describe.skip : describe)('egg 4: launchers', () => {
  it('@eggjs/scripts 4: start --daemon --framework=<this package> (the master loads no egg), then stop', async () => {
    const baseDir = onThisPackage('egg4-app');
    const loaded = probe(baseDir);
    const port = await getFreePort();
    const title = `egg-cluster-rs-test4-${process.pid}-${Date.now()}`;
    const stdoutLog = path.join(baseDir, 'logs/master-stdout.log');
    const stderrLog = path.join(baseDir, 'logs/master-stderr.log');
    const start = runScript(SCRIPTS4, [
      'start', '--daemon', `--framework=${ROOT}`, `--title=${title}`, `--port=${port}`, '--workers=2',
      `--stdout=${stdoutLog}`, `--stderr=${stderrLog}`, baseDir,
    ], { marker: baseDir, home: baseDir, cwd: baseDir, env: loaded.env, execArgv: keepFileHandles(SCRIPTS4) });
    const started = await start.waitExit(120000);
    assert.deepStrictEqual(started, { code: 0, signal: null }, start.tail());
    assert.match(start.stdout, new RegExp(`egg-cluster-rs started on http://127\\.0\\.0\\.1:${port}`));

    const procs = findProcesses(baseDir);
    const workers = procs.filter(p => /@eggjs\/cluster\/dist\/esm\/(agent|app)_worker\.js/.test(p.cmdline));
    assert.strictEqual(workers.length, 3, JSON.stringify(procs, null, 2) + fs.readFileSync(stdoutLog, 'utf8').slice(-3000) + fs.readFileSync(stderrLog, 'utf8'));
    const res = await get(port, '/');
    assert.strictEqual(res.status, 200, res.body);
    assert.strictEqual(JSON.parse(res.body).egg, ROOT);
    assert.match(fs.readFileSync(stdoutLog, 'utf8'), /\[master\] egg-cluster-rs started on/);
    // a CommonJS app: start-cluster.cjs (an ESM app's start-cluster.mjs: launchers.test.js)
    assertMasterWithoutEgg(loaded.dir, EGG[4], /@eggjs\/scripts\/scripts\/start-cluster\.cjs/);

    const stop = runScript(SCRIPTS4, [ 'stop', `--title=${title}`, '--timeout=1000' ], { marker: title, home: baseDir, cwd: baseDir });
    assert.strictEqual((await stop.waitExit(60000)).code, 0, stop.tail());
    await waitDead(procs.map(p => p.pid), 10000);
    assert.deepStrictEqual(findProcesses(baseDir), []);
    assert.match(fs.readFileSync(stdoutLog, 'utf8'), /\[master\] exit with code:0/);
  });

  it('@eggjs/mock 6: mm.cluster({ framework: <this package> }) (it asserts an async startCluster)', async () => {
    const { mm } = require('@eggjs/mock');
    const baseDir = onThisPackage('egg4-app');
    const app = mm.cluster({ baseDir, framework: ROOT, workers: 1, port: await getFreePort(), cache: false, coverage: false });
    try {
      await app.ready();
      await app.httpRequest().get('/').expect(200).expect(res => assert.strictEqual(res.body.egg, ROOT));
      assert.match(app.stdout, /egg-cluster-rs started on/);
    } finally {
      await app.close();
    }
    await waitDead(findProcesses(baseDir).map(p => p.pid), 10000);
    assert.deepStrictEqual(findProcesses(baseDir), []);
  });
});
