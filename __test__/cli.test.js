'use strict';

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const {
  ROOT, copyFixture, getFreePort, runScript, findProcesses, waitDead, get, waitUntil,
} = require('./helper');

const EGG_SCRIPTS = require.resolve('egg-scripts/bin/egg-scripts.js');
const CLI = path.join(ROOT, 'bin/egg-cluster-rs.js');

function appWorkers(baseDir) {
  return findProcesses(baseDir).filter(p => /lib\/app_worker\.js/.test(p.cmdline)).map(p => p.pid).sort();
}

describe('bin/egg-cluster-rs', () => {
  it('--help', async () => {
    const cli = runScript(CLI, [ '--help' ], { marker: 'egg-cluster-rs-cli-help', home: ROOT });
    assert.deepStrictEqual(await cli.waitExit(20000), { code: 0, signal: null }, cli.tail());
    assert.match(cli.stdout, /egg-cluster-rs reload \[--title=T\]/);
    assert.match(cli.stdout, /egg-cluster-rs scale up\|down/);
  });

  it('unknown title: exit 1 with a message', async () => {
    const title = `egg-cluster-rs-cli-none-${process.pid}-${Date.now()}`;
    const cli = runScript(CLI, [ 'reload', `--title=${title}` ], { marker: title, home: ROOT });
    assert.deepStrictEqual(await cli.waitExit(20000), { code: 1, signal: null }, cli.tail());
    assert.match(cli.stderr, new RegExp(`no running egg-cluster-rs master found with --title=${title}`));
  });

  it('reload --title replaces every app worker of an egg-scripts daemon; scale up/down', async () => {
    const baseDir = copyFixture('basic');
    const port = await getFreePort();
    const title = `egg-cluster-rs-cli-${process.pid}-${Date.now()}`;
    const stdoutLog = path.join(baseDir, 'logs/master-stdout.log');
    const stderrLog = path.join(baseDir, 'logs/master-stderr.log');
    const log = () => fs.readFileSync(stdoutLog, 'utf8');

    const start = runScript(EGG_SCRIPTS, [
      'start', '--daemon', `--framework=${ROOT}`, `--title=${title}`, `--port=${port}`, '--workers=2',
      `--stdout=${stdoutLog}`, `--stderr=${stderrLog}`, baseDir,
    ], { marker: baseDir, home: baseDir });
    const started = await start.waitExit(120000);
    assert.deepStrictEqual(started, { code: 0, signal: null }, start.tail());

    const procs = findProcesses(baseDir);
    try {
      const master = procs.filter(p => p.cmdline.includes('start-cluster'));
      assert.strictEqual(master.length, 1, JSON.stringify(procs, null, 2));
      const before = appWorkers(baseDir);
      assert.strictEqual(before.length, 2, JSON.stringify(procs, null, 2));

      // reload
      const cli = runScript(CLI, [ 'reload', `--title=${title}` ], { marker: title, home: baseDir });
      assert.deepStrictEqual(await cli.waitExit(20000), { code: 0, signal: null }, cli.tail());
      assert.match(cli.stdout, new RegExp(`sent SIGUSR2 to master pid ${master[0].pid}$`, 'm'));
      await waitUntil(() => /\[master\] rolling reload \(SIGUSR2\) done: 2 app worker\(s\) replaced/.test(log()), 60000,
        'the reload-done line');
      const after = await waitUntil(() => {
        const pids = appWorkers(baseDir);
        return pids.length === 2 && pids.every(pid => !before.includes(pid)) && pids;
      }, 20000, 'two new app workers');
      assert.strictEqual(after.filter(pid => before.includes(pid)).length, 0, `${before} -> ${after}`);
      const res = await get(port, '/');
      assert.strictEqual(res.status, 200);

      // scale up, then down
      const up = runScript(CLI, [ 'scale', 'up', `--title=${title}` ], { marker: title, home: baseDir });
      assert.deepStrictEqual(await up.waitExit(20000), { code: 0, signal: null }, up.tail());
      assert.match(up.stdout, /sent SIGTTIN/);
      await waitUntil(() => appWorkers(baseDir).length === 3, 60000, 'a third app worker');
      const down = runScript(CLI, [ 'scale', 'down', `--title=${title}` ], { marker: title, home: baseDir });
      assert.deepStrictEqual(await down.waitExit(20000), { code: 0, signal: null }, down.tail());
      assert.match(down.stdout, /sent SIGTTOU/);
      await waitUntil(() => appWorkers(baseDir).length === 2, 60000, 'back to two app workers');
      assert.strictEqual(fs.readFileSync(stderrLog, 'utf8'), '', 'nothing on the master stderr');
    } finally {
      const stop = runScript(EGG_SCRIPTS, [ 'stop', `--title=${title}`, '--timeout=1000' ], { marker: title, home: baseDir });
      assert.strictEqual((await stop.waitExit(60000)).code, 0, stop.tail());
      await waitDead(findProcesses(baseDir).map(p => p.pid).concat(procs.map(p => p.pid)), 15000);
    }
    assert.deepStrictEqual(findProcesses(baseDir), []);
  });
});
