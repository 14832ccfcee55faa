'use strict';

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const {
  ROOT, copyFixture, getFreePort, runScript, findProcesses, waitDead, get, watchdogOf,
} = require('./helper');
const { EGG, probe, assertMasterWithoutEgg } = require('./launch');

const BIN = require.resolve('egg-scripts/bin/egg-scripts.js');

describe('egg-scripts', () => {
  it('start --daemon --framework=<this package> (the master loads no egg), then stop --title', async () => {
    const baseDir = copyFixture('basic');
    const loaded = probe(baseDir);
    const port = await getFreePort();
    const title = `egg-cluster-rs-test-${process.pid}-${Date.now()}`;
    const stdoutLog = path.join(baseDir, 'logs/master-stdout.log');
    const stderrLog = path.join(baseDir, 'logs/master-stderr.log');

    const start = runScript(BIN, [
      'start', '--daemon', `--framework=${ROOT}`, `--title=${title}`, `--port=${port}`, '--workers=2',
      `--stdout=${stdoutLog}`, `--stderr=${stderrLog}`, baseDir,
    ], { marker: baseDir, home: baseDir, env: loaded.env });
    const started = await start.waitExit(120000);
    assert.deepStrictEqual(started, { code: 0, signal: null }, start.tail());
    assert.match(start.stdout, new RegExp(`egg-cluster-rs started on http://127\\.0\\.0\\.1:${port}`));

    const procs = findProcesses(baseDir);
    const master = procs.filter(p => p.cmdline.includes('start-cluster'));
    assert.strictEqual(master.length, 1, JSON.stringify(procs, null, 2));
    const workers = procs.filter(p => /lib\/(agent|app)_worker\.js/.test(p.cmdline));
    assert.strictEqual(workers.length, 3, JSON.stringify(procs, null, 2));
    for (const w of workers) {
      // what egg-scripts stop greps for: the title, and (for its SIGKILL fallback)
      // "egg-cluster/lib/{app,agent}_worker.js", which our workers' path holds (lib/workers/)
      assert(w.cmdline.includes(`"title":"${title}"`), w.cmdline);
      assert(w.cmdline.includes(path.join(ROOT, 'lib/workers/egg-cluster/lib/')), w.cmdline);
    }
    assertMasterWithoutEgg(loaded.dir, EGG[3], /egg-scripts\/lib\/start-cluster/);

    const res = await get(port, '/');
    assert.strictEqual(res.status, 200);
    assert.strictEqual(res.body, 'hi, egg');
    assert.strictEqual(fs.readFileSync(stderrLog, 'utf8'), '', 'nothing on the master stderr');
    assert.match(fs.readFileSync(stdoutLog, 'utf8'), /\[master\] egg-cluster-rs started on/);

    const stop = runScript(BIN, [ 'stop', `--title=${title}`, '--timeout=1000' ], { marker: title, home: baseDir });
    assert.strictEqual((await stop.waitExit(60000)).code, 0, stop.tail());
    assert.match(stop.stdout, new RegExp(`got master pid \\["${master[0].pid}"\\]`));
    await waitDead(procs.map(p => p.pid), 10000);
    assert.deepStrictEqual(findProcesses(baseDir), []);
    assert.match(fs.readFileSync(stdoutLog, 'utf8'), /\[master\] exit with code:0/);
  });

  // `egg-cluster-rs upgrade --title` after `start --daemon`, then `stop --title` stopping the new
  // tree: cli.test.js, with the rest of a deploy's life.

  it('stop\'s fallback finds and SIGKILLs a worker left behind by a dead master', async () => {
    const baseDir = copyFixture('busy');
    const port = await getFreePort();
    const title = `egg-cluster-rs-test-${process.pid}-${Date.now()}`;
    const start = runScript(BIN, [
      'start', '--daemon', `--framework=${ROOT}`, `--title=${title}`, `--port=${port}`, '--workers=1',
      `--stdout=${path.join(baseDir, 'logs/o.log')}`, `--stderr=${path.join(baseDir, 'logs/e.log')}`, baseDir,
    ], { marker: baseDir, home: baseDir });
    assert.deepStrictEqual(await start.waitExit(120000), { code: 0, signal: null }, start.tail());
    const res = await get(port, '/busy?ms=60000');
    const stuck = Number(res.body);
    const master = findProcesses(baseDir).filter(p => p.cmdline.includes('start-cluster'));
    assert.strictEqual(master.length, 1);
    // the master's watchdog would SIGKILL the stuck worker 1 s after the master's death
    // (docs/operations-hardening.md): gone with it, as if it could not start, the worker stays
    const watchdog = watchdogOf(master[0].pid);
    assert(watchdog, 'the master has a watchdog');
    process.kill(watchdog, 'SIGKILL');
    process.kill(master[0].pid, 'SIGKILL');
    await waitDead([ master[0].pid, watchdog ], 5000);

    const stopped = Date.now();
    const stop = runScript(BIN, [ 'stop', `--title=${title}`, '--timeout=100' ], { marker: title, home: baseDir });
    assert.strictEqual((await stop.waitExit(60000)).code, 0, stop.tail());
    assert.match(stop.output, /can't detect any running egg process/);
    assert.match(stop.stdout, new RegExp(`got worker/agent pids \\[[^\\]]*"${stuck}"`), stop.stdout);
    await waitDead([ stuck ], 5000);
    assert(Date.now() - stopped < 30000);
  });
});
