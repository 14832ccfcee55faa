'use strict';

// launchers.test.js for egg 4.1 (__test__/egg41: egg 4.1.2-beta.9, @eggjs/scripts 5, @eggjs/bin 8,
// @eggjs/mock 7), whose launchers all load the framework with import(): the master loads no egg,
// @eggjs/scripts 5's stop finds the workers of a master that died, mm.app() gets egg 4.1's classes
// from this package. egg 4.1 and its tools need Node >= 22.18: skipped, and said so, on Node 20.

const assert = require('assert');
const path = require('path');
const {
  REFERENCE, getFreePort, runScript, get,
} = require('./helper');
const {
  EGG, EGG41_MODULES, NODE_FOR_EGG41, appOn, probe, assertMasterWithoutEgg, startDaemon, stopAfterMasterDied, mock, mockApp,
} = require('./launch');

const SCRIPTS5 = path.join(EGG41_MODULES, '@eggjs/scripts/bin/run.js');
const BIN8 = path.join(EGG41_MODULES, '@eggjs/bin/bin/run.js');
const MOCK7 = path.join(EGG41_MODULES, '@eggjs/mock/dist/index.js');

const skipped = REFERENCE || !NODE_FOR_EGG41;
const why = NODE_FOR_EGG41 ? '' : ` (skipped: egg 4.1 needs Node >= 22.18, this is ${process.version})`;

(skipped ? describe.skip : describe)(`launchers on egg 4.1: the master never loads egg${why}`, () => {
  it('@eggjs/scripts 5 with an ESM app; its stop finds the workers of a dead master', async () => {
    const baseDir = appOn('launch-esm', EGG[41]);
    const { dir, env } = probe(baseDir);
    const { title, master } = await startDaemon(SCRIPTS5, baseDir, { ...env, EGG_CLUSTER_RS_TEST_ORPHAN: '1' });
    assertMasterWithoutEgg(dir, EGG[41], /@eggjs\/scripts\/scripts\/start-cluster\.mjs/);
    await stopAfterMasterDied(SCRIPTS5, baseDir, title, master);
  });

  it('@eggjs/scripts 5 with a CommonJS app', async () => {
    const baseDir = appOn('launch', EGG[41]);
    const { dir, env } = probe(baseDir);
    const { title } = await startDaemon(SCRIPTS5, baseDir, env);
    assertMasterWithoutEgg(dir, EGG[41], /@eggjs\/scripts\/scripts\/start-cluster\.cjs/);
    const stop = runScript(SCRIPTS5, [ 'stop', `--title=${title}`, '--timeout=1000' ], { marker: title, home: baseDir, cwd: baseDir });
    assert.strictEqual((await stop.waitExit(60000)).code, 0, stop.tail());
  });

  it('@eggjs/bin 8 dev --framework=egg-cluster-rs', async () => {
    const baseDir = appOn('launch-esm', EGG[41]);
    const { dir, env } = probe(baseDir);
    const port = await getFreePort();
    const dev = runScript(BIN8, [ 'dev', '--framework=egg-cluster-rs', `--port=${port}`, '--workers=1' ], {
      marker: baseDir, home: baseDir, cwd: baseDir, env,
    });
    await dev.waitFor(/\[master\] egg-cluster-rs started on/, 120000);
    assert.strictEqual((await get(port, '/')).body, 'hi, egg');
    const master = assertMasterWithoutEgg(dir, EGG[41], /@eggjs\/bin\/scripts\/start-cluster\.mjs/);
    process.kill(master.pid, 'SIGTERM');
    await dev.waitFor(/\[master\] exit with code:0/, 30000);
  });

  it('@eggjs/mock 7 mm.cluster()', async () => {
    const baseDir = appOn('launch-esm', EGG[41]);
    const { dir, env } = probe(baseDir);
    const res = await mock(MOCK7, 'cluster', { baseDir, framework: path.join(baseDir, 'node_modules/egg-cluster-rs'), port: await getFreePort() }, env);
    assert.deepStrictEqual(res, { status: 200, text: 'hi, egg' });
    assertMasterWithoutEgg(dir, EGG[41], /@eggjs\/mock\/dist\/lib\/start-cluster\.js/);
  });

  it('@eggjs/mock 7 mm.app(): the app gets egg 4.1\'s classes from this package', async () => {
    await mockApp(MOCK7, 'launch-esm', 41, 'framework');
  });
});
