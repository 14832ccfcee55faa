'use strict';

// Whatever starts it, the master never loads egg (index.js): each launcher here starts an app whose
// framework is this package, with fixtures/probes/loaded-files.js preloaded into every process, and
// the master's record holds no file of the app's egg while its app workers' do. And a stop command
// finds the workers of a master that died (lib/workers/README.md). egg 3 and egg 4.0 here; egg
// 4.1's launchers in egg41-launchers.test.js. egg-scripts 3, @eggjs/scripts 4 with a CommonJS app
// and egg-mock 5 carry the probe in egg-scripts.test.js, egg4-launchers.test.js and
// egg-mock.test.js.

const assert = require('assert');
const path = require('path');
const { ROOT, REFERENCE, getFreePort, runScript, get } = require('./helper');
const {
  EGG, appOn, probe, assertMasterWithoutEgg, startDaemon, stopAfterMasterDied, mock, mockApp,
} = require('./launch');

const SCRIPTS4 = path.join(ROOT, 'node_modules/@eggjs/scripts/bin/run.js');
const EGG_BIN = path.join(ROOT, 'node_modules/egg-bin/dist/bin/cli.js');

(REFERENCE ? describe.skip : describe)('launchers: the master never loads egg (egg 3, egg 4.0)', () => {
  it('@eggjs/scripts 4 with an ESM app (import() of this package); stop finds the workers of a dead master', async () => {
    const baseDir = appOn('launch-esm', EGG[4]);
    const { dir, env } = probe(baseDir);
    const { title, master } = await startDaemon(SCRIPTS4, baseDir, { ...env, EGG_CLUSTER_RS_TEST_ORPHAN: '1' });
    assertMasterWithoutEgg(dir, EGG[4], /@eggjs\/scripts\/scripts\/start-cluster\.mjs/);
    await stopAfterMasterDied(SCRIPTS4, baseDir, title, master);
  });

  it('@eggjs/mock 6 mm.cluster() from its ESM entry', async () => {
    const baseDir = appOn('launch-esm', EGG[4]);
    const { dir, env } = probe(baseDir);
    const entry = path.join(ROOT, 'node_modules/@eggjs/mock/dist/esm/index.js');
    const res = await mock(entry, 'cluster', { baseDir, framework: path.join(baseDir, 'node_modules/egg-cluster-rs'), port: await getFreePort() }, env);
    assert.deepStrictEqual(res, { status: 200, text: 'hi, egg' });
    assertMasterWithoutEgg(dir, EGG[4], /@eggjs\/mock\/dist\/esm\/lib\/start-cluster\.js/);
  });

  it('egg-bin 6 dev --framework=egg-cluster-rs', async () => {
    const baseDir = appOn('launch', EGG[3]);
    const { dir, env } = probe(baseDir);
    const port = await getFreePort();
    const dev = runScript(EGG_BIN, [ 'dev', '--framework=egg-cluster-rs', `--port=${port}`, '--workers=1' ], {
      marker: baseDir, home: baseDir, cwd: baseDir, env,
    });
    await dev.waitFor(/\[master\] egg-cluster-rs started on/, 90000);
    assert.strictEqual((await get(port, '/')).body, 'hi, egg');
    const master = assertMasterWithoutEgg(dir, EGG[3], /egg-bin\/scripts\/start-cluster\.js/);
    process.kill(master.pid, 'SIGTERM');
    await dev.waitFor(/\[master\] exit with code:0/, 30000);
  });

  it('a plain require, from `node --eval=...` (the eval flag is not passed on to the workers)', async () => {
    const baseDir = appOn('launch', EGG[3]);
    const { dir, env } = probe(baseDir);
    const port = await getFreePort();
    // fork('--eval=<code>') runs `node --eval=<code>` with an IPC channel to this test
    const m = runScript(`--eval=require('egg-cluster-rs').startCluster(${JSON.stringify({ baseDir, port, workers: 1 })})`, [], {
      marker: baseDir, home: baseDir, cwd: baseDir, env,
    });
    await m.waitReady(90000);
    assert.strictEqual((await get(port, '/')).body, 'hi, egg');
    const master = assertMasterWithoutEgg(dir, EGG[3], /^$/);
    assert.strictEqual(master.pid, m.pid);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());
  });

  it('a plain import of { startCluster }, from an ES module', async () => {
    const baseDir = appOn('launch-esm', EGG[4]);
    const { dir, env } = probe(baseDir);
    const port = await getFreePort();
    const code = `import { startCluster } from 'egg-cluster-rs'; await startCluster(${JSON.stringify({ baseDir, port, workers: 1 })});`;
    // fork('--input-type=module', ['-e', code]) runs `node --input-type=module -e <code>`
    const m = runScript('--input-type=module', [ '-e', code ], { marker: baseDir, home: baseDir, cwd: baseDir, env });
    await m.waitReady(90000);
    assert.strictEqual((await get(port, '/')).body, 'hi, egg');
    assert.strictEqual(assertMasterWithoutEgg(dir, EGG[4], /^$/).pid, m.pid);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit(30000)).code, 0, m.tail());
  });

  // mm.app() loads the app in the mock's process: it reads egg's classes from this package
  it('egg-mock 5 mm.app() on egg 3: the app gets egg\'s classes from this package', async () => {
    await mockApp(path.join(ROOT, 'node_modules/egg-mock/index.js'), 'launch', 3, 'customEgg');
  });

  it('@eggjs/mock 6 mm.app() on egg 4.0: the app gets egg\'s classes from this package', async () => {
    await mockApp(path.join(ROOT, 'node_modules/@eggjs/mock/dist/esm/index.js'), 'launch-esm', 4, 'framework');
  });
});
