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

  it('reload --title waits for every new worker (a line each), fails with the reason, --no-wait signals; scale up/down wait too', async function() {
    this.timeout(240000);
    const baseDir = copyFixture('reload');
    const port = await getFreePort();
    const title = `egg-cluster-rs-cli-${process.pid}-${Date.now()}`;
    const stdoutLog = path.join(baseDir, 'logs/master-stdout.log');
    const stderrLog = path.join(baseDir, 'logs/master-stderr.log');
    const log = () => fs.readFileSync(stdoutLog, 'utf8');
    const cli = async (args, code = 0) => {
      const run = runScript(CLI, [ ...args, `--title=${title}` ], { marker: title, home: baseDir });
      assert.deepStrictEqual(await run.waitExit(120000), { code, signal: null }, run.tail());
      return run;
    };

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
      const pid = master[0].pid;
      const before = appWorkers(baseDir);
      assert.strictEqual(before.length, 2, JSON.stringify(procs, null, 2));

      // reload: a line per replaced worker, exit 0 once every new one serves
      const reload = await cli([ 'reload' ]);
      const lines = reload.stdout.split('\n').filter(l => l.includes(`master pid ${pid}: app_worker#`));
      assert.strictEqual(lines.length, 2, reload.stdout);
      const fresh = lines.map(l => Number(l.match(/app_worker#\d+:(\d+) serves in slot \d, replacing app_worker#\d+:(\d+) \(\d\/2\)$/)[1]));
      assert(fresh.every(p => !before.includes(p)), reload.stdout);
      assert.match(reload.stdout, new RegExp(`rolling reload done on master pid ${pid}: 2 app worker\\(s\\) replaced in \\d+ms; every new one serves$`, 'm'));
      assert(fresh.every(p => findProcesses(baseDir).some(x => x.pid === p)), 'the new workers run');
      assert.strictEqual((await get(port, '/text')).status, 200);
      await waitUntil(() => /\[master\] rolling reload \(egg-cluster-rs reload\) done: 2 app worker\(s\) replaced/.test(log()), 60000,
        'the reload-done line');

      // a replacement that cannot boot: exit 1 with the reason; the workers of before serve on
      fs.writeFileSync(path.join(baseDir, 'boot-fail'), '');
      const failed = await cli([ 'reload' ], 1);
      assert.match(failed.stderr, new RegExp(`rolling reload on master pid ${pid} failed: the new app_worker#\\d+:\\d+ exited before it listened \\(code: \\d+, signal: null\\): Error: boot-fail marker present`));
      await waitUntil(() => String(appWorkers(baseDir)) === String([ ...fresh ].sort()), 30000, 'only the workers of before');
      fs.unlinkSync(path.join(baseDir, 'boot-fail'));

      // --no-wait: the signal, at once
      const nowait = await cli([ 'reload', '--no-wait' ]);
      assert.match(nowait.stdout, new RegExp(`sent SIGUSR2 to master pid ${pid}$`, 'm'));
      await waitUntil(() => /\[master\] rolling reload \(SIGUSR2\) done: 2 app worker\(s\) replaced/.test(log()), 60000,
        'the reload-done line');

      // scale up: exit 0 once the third serves; scale down: once the retired one has exited
      const up = await cli([ 'scale', 'up' ]);
      assert.match(up.stdout, new RegExp(`master pid ${pid}: app_worker#\\d+:\\d+ serves \\(3 of 3 app workers serve\\)$`, 'm'));
      assert.match(up.stdout, /add one app worker done on master pid \d+: 3 app workers serve/);
      assert.strictEqual(appWorkers(baseDir).length, 3);
      const down = await cli([ 'scale', 'down' ]);
      assert.match(down.stdout, /retire one app worker done on master pid \d+: 2 app workers serve/);
      assert.strictEqual(appWorkers(baseDir).length, 2);
    } finally {
      const stop = runScript(EGG_SCRIPTS, [ 'stop', `--title=${title}`, '--timeout=1000' ], { marker: title, home: baseDir });
      assert.strictEqual((await stop.waitExit(60000)).code, 0, stop.tail());
      await waitDead(findProcesses(baseDir).map(p => p.pid).concat(procs.map(p => p.pid)), 15000);
    }
    assert.deepStrictEqual(findProcesses(baseDir), []);
  });
});
