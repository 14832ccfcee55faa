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

  // One egg-scripts daemon through a deploy's life: reloads, scaling, upgrades (docs/reload.md,
  // docs/upgrade.md). fixtures/apps/reload: a worker booted while `boot-fail` exists throws, one
  // booted while `boot-hold` exists waits; while `hold-close` exists the agent's close waits
  // (the old tree's drain window, held open).
  it('against an egg-scripts daemon: reload waits (a line per worker), fails with the reason, --no-wait signals; scale waits; upgrade --title joins a running upgrade, keeps the scale, and during the old tree\'s drain addresses the new master; stop --title stops the newest tree', async function() {
    this.timeout(360000);
    const baseDir = copyFixture('reload');
    const port = await getFreePort();
    const title = `egg-cluster-rs-cli-${process.pid}-${Date.now()}`;
    const stdoutLog = path.join(baseDir, 'logs/master-stdout.log');
    const log = () => fs.readFileSync(stdoutLog, 'utf8');
    // the daemon's agent may take 60 s to close: the drain window is held by `hold-close`
    const env = { EGG_AGENT_CLOSE_TIMEOUT: '60000' };
    const ok = async (r, what, code = 0) => {
      assert.deepStrictEqual(await r.waitExit(150000), { code, signal: null }, `${what}\n${r.tail()}`);
      return r;
    };
    const run = args => runScript(CLI, [ ...args, `--title=${title}` ], { marker: title, home: baseDir });
    const cli = (args, code) => ok(run(args), args.join(' '), code);
    const masters = () => findProcesses(baseDir).filter(p => p.cmdline.includes('start-cluster')).map(p => p.pid);
    const statusOf = async pid => JSON.parse((await ok(runScript(CLI, [ 'status', `--pid=${pid}`, '--json' ], { marker: title, home: baseDir }), 'status')).stdout);

    await ok(runScript(EGG_SCRIPTS, [
      'start', '--daemon', `--framework=${ROOT}`, `--title=${title}`, `--port=${port}`, '--workers=2',
      `--stdout=${stdoutLog}`, `--stderr=${path.join(baseDir, 'logs/master-stderr.log')}`, baseDir,
    ], { marker: baseDir, home: baseDir, env }), 'egg-scripts start');
    const old = findProcesses(baseDir);
    let third;
    try {
      const [ first ] = masters();
      const before = appWorkers(baseDir);
      assert.strictEqual(before.length, 2, JSON.stringify(old, null, 2));

      // reload: a line per replaced worker, exit 0 once every new one serves
      const reload = await cli([ 'reload' ]);
      const lines = reload.stdout.split('\n').filter(l => l.includes(`master pid ${first}: app_worker#`));
      assert.strictEqual(lines.length, 2, reload.stdout);
      const fresh = lines.map(l => Number(l.match(/app_worker#\d+:(\d+) serves in slot \d, replacing app_worker#\d+:\d+ \(\d\/2\)$/)[1]));
      assert(fresh.every(p => !before.includes(p)), reload.stdout);
      assert.match(reload.stdout, new RegExp(`rolling reload done on master pid ${first}: 2 app worker\\(s\\) replaced in \\d+ms; every new one serves$`, 'm'));
      assert(fresh.every(p => findProcesses(baseDir).some(x => x.pid === p)), 'the new workers run');
      await waitUntil(() => /\[master\] rolling reload \(egg-cluster-rs reload\) done: 2 app worker\(s\) replaced/.test(log()), 60000,
        'the reload-done line');

      // a replacement that cannot boot: exit 1 with the reason; the workers of before serve on
      fs.writeFileSync(path.join(baseDir, 'boot-fail'), '');
      const failed = await cli([ 'reload' ], 1);
      assert.match(failed.stderr, new RegExp(`rolling reload on master pid ${first} failed: the new app_worker#\\d+:\\d+ exited before it listened \\(code: \\d+, signal: null\\): Error: boot-fail marker present`));
      await waitUntil(() => String(appWorkers(baseDir)) === String([ ...fresh ].sort()), 30000, 'only the workers of before');
      fs.unlinkSync(path.join(baseDir, 'boot-fail'));

      // --no-wait: the signal, at once
      const nowait = await cli([ 'reload', '--no-wait' ]);
      assert.match(nowait.stdout, new RegExp(`sent SIGUSR2 to master pid ${first}$`, 'm'));
      await waitUntil(() => /\[master\] rolling reload \(SIGUSR2\) done: 2 app worker\(s\) replaced/.test(log()), 60000,
        'the reload-done line');

      // scale up: exit 0 once the third serves
      const up = await cli([ 'scale', 'up' ]);
      assert.match(up.stdout, new RegExp(`master pid ${first}: app_worker#\\d+:\\d+ serves \\(3 of 3 app workers serve\\)$`, 'm'));
      assert.match(up.stdout, /add one app worker done on master pid \d+: 3 app workers serve/);
      assert.strictEqual(appWorkers(baseDir).length, 3);

      // an upgrade whose new tree is held at boot, and a second deploy meanwhile: it joins
      fs.writeFileSync(path.join(baseDir, 'boot-hold'), '');
      fs.writeFileSync(path.join(baseDir, 'hold-close'), '');
      const deploy1 = run([ 'upgrade' ]);
      const second = await waitUntil(() => masters().find(pid => pid !== first), 30000, 'the new master');
      await waitUntil(async () => (await statusOf(first)).master.upgradingTo === second, 30000, 'the upgrade to be under way');
      const deploy2 = run([ 'upgrade' ]);
      await deploy2.waitFor(new RegExp(`master pid ${first} is upgrading to new master pid ${second} already: joining that upgrade`), 30000);
      assert.match(deploy2.stderr, new RegExp(`skipping master pid ${second} is starting`));
      fs.unlinkSync(path.join(baseDir, 'boot-hold'));
      for (const d of [ deploy1, deploy2 ]) {
        assert.match((await ok(d, 'upgrade')).stdout, new RegExp(`upgrade done: new master pid ${second} serves; master pid ${first} is closing`));
      }
      // the scale went with it
      const s2 = await statusOf(second);
      assert.strictEqual(s2.master.workers, 3, JSON.stringify(s2.master));
      assert.strictEqual(s2.children.filter(c => c.role === 'app' && c.state === 'serving').length, 3);
      assert.match(log(), new RegExp(`${second} \\[master\\] upgrade: starting 3 app workers as the previous master ran them \\(workers: 2 at its start\\)`));

      // the old tree drains (held): scale and another upgrade address the new master only
      assert.strictEqual((await statusOf(first)).master.phase, 'closing');
      const down = await cli([ 'scale', 'down' ]);
      assert.match(down.stdout, new RegExp(`retire one app worker done on master pid ${second}: 2 app workers serve`));
      assert.doesNotMatch(down.stdout, new RegExp(`master pid ${first}`));
      const deploy3 = await cli([ 'upgrade' ]);
      third = Number(deploy3.stdout.match(new RegExp(`upgrade done: new master pid (\\d+) serves; master pid ${second} is closing`))[1]);
      assert.strictEqual((await statusOf(third)).master.workers, 2);
      assert(findProcesses(baseDir).some(p => p.pid === first), 'the first tree was still draining');
      fs.unlinkSync(path.join(baseDir, 'hold-close'));
      await waitDead([ first, second ], 60000);
      assert(findProcesses(baseDir).every(p => !old.some(o => o.pid === p.pid)), 'nothing of the first tree is left');
      assert.strictEqual((await get(port, '/text')).body, 'version 1');
      assert.match(log(), new RegExp(`${third} \\[master\\] egg-cluster-rs started on http://127\\.0\\.0\\.1:${port}`));
      assert.match(log(), new RegExp(`${first} \\[master\\] exit with code:0`));
    } finally {
      for (const f of [ 'boot-hold', 'hold-close', 'boot-fail' ]) fs.rmSync(path.join(baseDir, f), { force: true });
      // egg-scripts stop --title finds the newest master (it has the first one's arguments)
      const stop = runScript(EGG_SCRIPTS, [ 'stop', `--title=${title}`, '--timeout=1000' ], { marker: title, home: baseDir });
      assert.strictEqual((await stop.waitExit(60000)).code, 0, stop.tail());
      if (third) assert.match(stop.stdout, new RegExp(`got master pid \\["${third}"\\]`));
      await waitDead(findProcesses(baseDir).map(p => p.pid).concat(old.map(p => p.pid)), 30000);
    }
    assert.deepStrictEqual(findProcesses(baseDir), []);
  });
});
