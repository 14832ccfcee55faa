'use strict';

// Live worker replacement with real processes under real load: rolling reloads (SIGUSR2,
// reload-worker, promise.reload()) in each connection mode, a replacement that fails at boot,
// maxMemoryRestart, scaling with SIGTTIN/SIGTTOU.
//
// fixtures/apps/reload: GET /pid, /text (a controller), /rss, /grow?mb=N (keeps N MiB);
// app.js throws at boot while `boot-fail` exists in the baseDir; agent.js relays egg-pids
// to the parent as `agent-egg-pids` and sends `reload-worker` to the master on `ask-reload`.

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const { Load } = require('./load');
const { TS, REFERENCE, startMaster, get, isAlive, waitUntil } = require('./helper');

const PROD = { EGG_SERVER_ENV: 'prod' };
const LOCAL = { EGG_SERVER_ENV: 'local' };
const MIB = 1024 * 1024;

function sorted(list) {
  return [ ...list ].sort((a, b) => a - b);
}

// a master line: "<ts> <level> <master pid> [master] <text>" (text is a regexp source)
function masterLine(m, text, level = '(?:DEBUG|INFO|WARN|ERROR)') {
  return new RegExp(`${TS}${level} ${m.pid} \\[master\\] ${text}$`, 'm');
}

describe('live worker replacement (reload)', function() {
  if (REFERENCE) return; // egg-cluster 2.5 has no rolling reload

  const loads = [];
  function load(port, opts) {
    const l = new Load(port, opts);
    loads.push(l);
    return l;
  }
  afterEach(async () => {
    await Promise.all(loads.splice(0).map(l => l.stop()));
  });

  async function stop(m) {
    assert(!m.exited, `master exited\n${m.tail()}`);
    m.kill('SIGTERM');
    const exit = await m.waitExit(30000);
    assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
  }

  // the `reload-done` message after message index `mark`
  function reloadDone(m, mark, timeout = 90000) {
    return m.waitFor(h => h.messages.slice(mark).find(msg => msg && msg.action === 'reload-done'), timeout);
  }

  for (const [ mode, opts ] of [
    [ 'shared socket', {} ],
    [ 'reusePort: true', { reusePort: true } ],
    [ 'sticky: true', { sticky: true } ],
  ]) {
    it(`SIGUSR2 under load (keep-alive and Connection: close clients), ${mode}: every app worker replaced, no failed request`, async () => {
      const m = await startMaster('reload', { workers: 2, ...opts }, { env: PROD });
      const port = m.options.port;
      await m.waitReady();
      const before = sorted(m.workers().app);
      assert.strictEqual(before.length, 2);

      const l = load(port);
      // (sticky: a client's address picks its worker; 8 addresses may all land on one)
      const each = opts.sticky ? pids => r => pids.some(pid => r.filter(x => x.pid === pid).length >= 20)
        : pids => r => pids.every(pid => r.filter(x => x.pid === pid).length >= 10);
      await l.until(each(before));
      const mark = m.messages.length;
      const t0 = Date.now();
      m.kill('SIGUSR2');
      const start = await m.waitFor(h => h.messages.slice(mark).find(msg => msg && msg.action === 'reload-start'));
      assert.strictEqual(start.data.workers, 2, JSON.stringify(start));
      await m.waitFor(masterLine(m, 'rolling reload \\(SIGUSR2\\): replacing 2 app worker\\(s\\), \\d+ at a time'));
      const done = await reloadDone(m, mark);
      const t1 = Date.now();
      assert.strictEqual(done.data.ok, true, `${JSON.stringify(done)}\n${m.tail()}`);
      assert.strictEqual(done.data.replaced.length, 2);
      assert.deepStrictEqual(sorted(done.data.replaced.map(p => p[0])), before);
      const doneLine = await m.waitFor(masterLine(m, 'rolling reload \\(SIGUSR2\\) done: 2 app worker\\(s\\) replaced \\((\\d+)ms\\)'));
      for (const pid of before) {
        assert.match(m.output, masterLine(m, `app_worker#\\d+:${pid} retiring: draining, then exit`));
        assert.match(m.output, masterLine(m, `app_worker#\\d+:${pid} retired \\(code: 0, signal: null\\)`));
      }
      const after = sorted(m.workers().app);
      assert.strictEqual(after.length, 2, `workers after: ${after}`);
      assert(after.every(pid => !before.includes(pid)), `before ${before}, after ${after}`);
      assert.deepStrictEqual(sorted(done.data.replaced.map(p => p[1])), after);
      assert(before.every(pid => !isAlive(pid)));

      // the new workers serve the load
      await l.until(r => each(after)(r.filter(x => x.t > t1)));
      await l.stop();
      l.assertAllOk(m);
      const during = l.count(t0, t1);
      console.log('      %s: reload %sms, %d requests during it (%d keep-alive), %d in all',
        mode, doneLine[1], during, l.results.filter(r => r.t >= t0 && r.t <= t1 && r.kind === 'keep-alive').length, l.results.length);
      assert(during > 0);
      await stop(m);
    });
  }

  it('reloadConcurrency: 2 (over EGG_CLUSTER_RS_RELOAD_CONCURRENCY=1), 4 workers under load: 2 replacements boot at once, never more; at least 4 serve throughout; no failed request', async () => {
    const m = await startMaster('reload', { workers: 4, reloadConcurrency: 2 }, { env: { ...PROD, EGG_CLUSTER_RS_RELOAD_CONCURRENCY: '1' } });
    const port = m.options.port;
    await m.waitReady();
    const before = m.workers().app;
    const l = load(port);
    await l.until(r => r.length >= 40);
    const mark = m.messages.length;
    const from = m.output.length;
    m.kill('SIGUSR2');
    const done = await reloadDone(m, mark);
    assert.strictEqual(done.data.ok, true, `${JSON.stringify(done)}\n${m.tail()}`);
    assert.strictEqual(done.data.replaced.length, 4);
    await m.waitFor(masterLine(m, 'rolling reload \\(SIGUSR2\\) done: 4 app worker\\(s\\) replaced \\(\\d+ms\\)'));
    // replay the master's lines in order: a replacement boots from its spawn line to its
    // "started at" line; an old worker serves until its "retiring" line
    let booting = 0;
    let maxBooting = 0;
    let serving = 4;
    let minServing = 4;
    for (const line of m.output.slice(from).split('\n')) {
      if (/\[master\] app_worker#\d+:\d+ start, state:/.test(line)) booting++;
      else if (/\[master\] app_worker#\d+:\d+ started at/.test(line)) { booting--; serving++; }
      else if (/\[master\] app_worker#\d+:\d+ retiring/.test(line)) serving--;
      maxBooting = Math.max(maxBooting, booting);
      minServing = Math.min(minServing, serving);
    }
    assert.strictEqual(maxBooting, 2, m.tail(80));
    assert(minServing >= 4, `${minServing} serving at one moment\n${m.tail(80)}`);
    await l.stop();
    l.assertAllOk(m);
    assert(before.every(pid => !isAlive(pid)));
    await stop(m);
  });

  it('local env: reload-worker from the agent, then from the parent, replaces every app worker: all 4 boot at once, and no old worker serves once the first replacement does', async function() {
    this.timeout(180000);
    // reloadConcurrency 1 is the production surge here: the local env's reload ignores it
    const m = await startMaster('reload', { workers: 4, reloadConcurrency: 1 }, { env: LOCAL });
    await m.waitReady();
    let workers = sorted(m.workers().app);
    assert.strictEqual(workers.length, 4);
    await m.waitFor(h => h.messages.find(msg => msg && msg.action === 'agent-egg-pids' && msg.data.pids.length === 4));

    for (const [ via, send, count ] of [
      [ 'agent', () => m.send({ to: 'agent', action: 'ask-reload' }), 4 ],
      [ 'parent', () => m.send({ to: 'master', action: 'reload-worker' }), 2 ],
    ]) {
      if (workers.length > count) {
        // two workers are enough to show the parent's path: the test boots fewer
        const mark = m.messages.length;
        m.send({ action: 'runner-scale', data: count });
        await m.waitFor(h => h.messages.slice(mark).find(msg => msg && msg.action === 'agent-egg-pids' && msg.data.pids.length === count));
        workers = await waitUntil(() => m.workers().app.length === count && sorted(m.workers().app), 30000, `${count} app workers`);
      }
      const mark = m.messages.length;
      send();
      const done = await reloadDone(m, mark, 150000);
      assert.strictEqual(done.data.ok, true, `${via}: ${JSON.stringify(done)}\n${m.tail()}`);
      assert.deepStrictEqual(sorted(done.data.replaced.map(p => p[0])), workers, via);
      // what the agent was told of the serving workers, in order: once the first new worker
      // serves, the old ones are all gone from it before a second new one joins
      const told = m.messages.slice(mark).filter(msg => msg && msg.action === 'agent-egg-pids').map(msg => msg.data.pids);
      const first = told.findIndex(pids => pids.some(pid => !workers.includes(pid)));
      assert(first >= 0, JSON.stringify(told));
      const newOnly = told.slice(first).find(pids => pids.every(pid => !workers.includes(pid)));
      assert(newOnly && newOnly.length === 1, `${via}: no moment with only the first new worker serving: ${JSON.stringify(told)}`);
      const after = sorted(m.workers().app);
      assert.strictEqual(after.length, count);
      assert(after.every(pid => !workers.includes(pid)), `${via}: before ${workers}, after ${after}`);
      assert.strictEqual((await get(m.options.port, '/pid')).status, 200);
      workers = after;
    }
    for (const n of [ 4, 2 ]) {
      assert.match(m.output, masterLine(m, `rolling reload \\(reload-worker\\): replacing ${n} app worker\\(s\\), all at once; the old ones retire as soon as one new worker serves \\(local env\\)`));
      assert.match(m.output, masterLine(m, `rolling reload \\(reload-worker\\) done: ${n} app worker\\(s\\) replaced \\(\\d+ms\\)`));
    }
    await stop(m);
  });

  it('local env with egg-development: editing a controller reloads the workers, which serve the new code', async () => {
    const m = await startMaster('reload', { workers: 2 }, { env: LOCAL });
    await m.waitReady();
    const port = m.options.port;
    const before = sorted(m.workers().app);
    assert.strictEqual((await get(port, '/text')).body, 'version 1');

    const mark = m.messages.length;
    const file = path.join(m.baseDir, 'app/controller/home.js');
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('version 1', 'version 2'));
    const done = await reloadDone(m, mark);
    assert.strictEqual(done.data.ok, true, `${JSON.stringify(done)}\n${m.tail()}`);
    assert.match(m.output, /\[agent:development\] reload worker because .*home\.js/);
    const after = sorted(m.workers().app);
    assert(after.every(pid => !before.includes(pid)), `before ${before}, after ${after}`);
    for (let i = 0; i < 10; i++) assert.strictEqual((await get(port, '/text')).body, 'version 2');
    await stop(m);
  });

  it('local env with egg-development: a syntax error fails the reload loudly (file and error), the next good edit recovers and says so', async () => {
    const m = await startMaster('reload', { workers: 2 }, { env: LOCAL });
    await m.waitReady();
    const port = m.options.port;
    const before = sorted(m.workers().app);
    const file = path.join(m.baseDir, 'app/controller/home.js');
    const good = fs.readFileSync(file, 'utf8');

    const mark = m.messages.length;
    // line 7: `this.ctx.body = 'version 2' +;`
    fs.writeFileSync(file, good.replace("'version 1';", "'version 2' +;"));
    const done = await reloadDone(m, mark);
    assert.strictEqual(done.data.ok, false, `${JSON.stringify(done)}\n${m.tail()}`);
    assert.match(done.data.error, /SyntaxError: .*home\.js:7\)$/, JSON.stringify(done));
    // egg-cluster hides this line at DEBUG in the local env; ours is INFO (docs/fidelity.md)
    assert.match(m.stdout, masterLine(m, 'reload workers\\.\\.\\.', 'INFO'));
    // the block: a heading, what it means, the file (with the line), the error, what to do
    const block = new RegExp(`${TS}ERROR ${m.pid} \\[master\\] =+ reload failed =+\n` +
      'The app workers still run the code from before the change\\.\n' +
      `  file:  ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:7\n` +
      '  error: SyntaxError: [^\n]+\n' +
      'Fix it and save: the next change reloads the workers again\\.\n=+$', 'm');
    assert.match(m.stderr, block, m.tail());
    // the old workers answer with the old code (the surge's other failed replacement may
    // still be exiting when reload-done arrives)
    await m.waitFor(() => JSON.stringify(sorted(m.workers().app)) === JSON.stringify(before) || undefined);
    assert.strictEqual((await get(port, '/text')).body, 'version 1');

    const mark2 = m.messages.length;
    fs.writeFileSync(file, good.replace('version 1', 'version 3'));
    const done2 = await reloadDone(m, mark2);
    assert.strictEqual(done2.data.ok, true, `${JSON.stringify(done2)}\n${m.tail()}`);
    assert.match(m.stdout, masterLine(m, 'reload recovered: the app workers run the current code again \\(the previous reload failed: .*SyntaxError: .*\\)', 'INFO'));
    for (let i = 0; i < 4; i++) assert.strictEqual((await get(port, '/text')).body, 'version 3');
    await stop(m);
  });

  it('a replacement that throws at boot stops the reload; the old workers keep serving, the master stays up', async () => {
    const m = await startMaster('reload', { workers: 2 }, { env: PROD });
    const port = m.options.port;
    await m.waitReady();
    const before = sorted(m.workers().app);
    assert.strictEqual(before.length, 2);

    const l = load(port, { keepAlive: 2, close: 2 });
    await l.until(r => r.length >= 20);
    fs.writeFileSync(path.join(m.baseDir, 'boot-fail'), '');
    const mark = m.messages.length;
    m.kill('SIGUSR2');
    const done = await reloadDone(m, mark);
    assert.strictEqual(done.data.ok, false, JSON.stringify(done));
    assert(done.data.error, JSON.stringify(done));
    assert.deepStrictEqual(done.data.replaced, []);
    console.log('      reload-done: %j', done.data);
    assert.match(m.stderr, /\[master\] rolling reload \(SIGUSR2\) failed: .*; the old app workers keep serving/);

    // the same workers serve on; the master is up
    const t = Date.now();
    await l.until(r => before.every(pid => r.filter(x => x.pid === pid && x.t > t).length >= 5));
    assert.deepStrictEqual(sorted(m.workers().app), before);
    await l.stop();
    l.assertAllOk(m);
    assert(l.results.every(r => before.includes(r.pid)), `answered by ${[ ...new Set(l.results.map(r => r.pid)) ]}`);
    assert(!m.exited);

    // once the fault is gone, a reload succeeds
    fs.unlinkSync(path.join(m.baseDir, 'boot-fail'));
    const mark2 = m.messages.length;
    m.kill('SIGUSR2');
    const done2 = await reloadDone(m, mark2);
    assert.strictEqual(done2.data.ok, true, `${JSON.stringify(done2)}\n${m.tail()}`);
    await stop(m);
  });

  it('maxMemoryRestart: a worker grown over the limit is replaced, no failed request', async () => {
    const m = await startMaster('reload', { workers: 2, maxMemoryRestart: '300M', memoryCheckInterval: 500 }, { env: PROD });
    const port = m.options.port;
    await m.waitReady();
    const before = sorted(m.workers().app);

    // baseline RSS of both workers well under the limit (an idle worker of the fixture is about
    // 70 MiB on Node 20 and 105 MiB on Node 24: the limit leaves room for every Node major)
    const seen = new Map();
    for (let i = 0; i < 100 && seen.size < 2; i++) {
      const r = JSON.parse((await get(port, '/rss')).body);
      seen.set(r.pid, r.rss);
    }
    for (const [ pid, rss ] of seen) assert(rss < 200 * MIB, `baseline RSS of ${pid}: ${rss}`);

    const l = load(port, { keepAlive: 1, close: 1 });
    await l.until(r => r.length >= 10);
    const grown = JSON.parse((await get(port, '/grow?mb=300')).body);
    assert(grown.rss > 300 * MIB, `grown RSS ${grown.rss}`);
    const victim = grown.pid;
    const line = await m.waitFor(masterLine(m, `app_worker#\\d+:${victim} uses \\d+ MiB of memory \\(RSS \\d+ bytes\\), over maxMemoryRestart 300 MiB \\(\\d+ bytes\\): replacing it`), 20000);
    assert(line);
    await m.waitFor(masterLine(m, `app_worker#\\d+:${victim} retired \\(code: 0, signal: null\\)`), 60000);
    const after = sorted(m.workers().app);
    assert.strictEqual(after.length, 2);
    assert(!after.includes(victim));
    const survivor = before.find(pid => pid !== victim);
    assert(after.includes(survivor), `the other worker was kept: ${after}`);
    const replacement = after.find(pid => pid !== survivor);
    const t = Date.now();
    await l.until(r => r.some(x => x.pid === replacement && x.t > t));
    await l.stop();
    l.assertAllOk(m);
    console.log('      %s; %d requests in all', line[0].replace(/^.*\[master\] /, ''), l.results.length);
    await stop(m);
  });

  it('SIGTTIN then SIGTTOU: 2 -> 3 -> 2 app workers, the agent\'s egg-pids follows; then 20 quick scale-ups boot at most reloadConcurrency workers at once, up to EGG_CLUSTER_RS_MAX_WORKERS', async function() {
    this.timeout(180000);
    const m = await startMaster('reload', { workers: 2, reloadConcurrency: 1 }, { env: { ...PROD, EGG_CLUSTER_RS_MAX_WORKERS: '4' } });
    const port = m.options.port;
    await m.waitReady();
    const before = sorted(m.workers().app);
    const egg = (count, where) => m.waitFor(h => h.messages.find(msg =>
      msg && msg.action === 'agent-egg-pids' && msg.data.pids.length === count && (!where || where(msg.data.pids))));
    await egg(2, pids => String(sorted(pids)) === String(before));

    const l = load(port, { keepAlive: 2, close: 2 });
    await l.until(r => r.length >= 10);
    let mark = m.messages.length;
    m.kill('SIGTTIN');
    await m.waitFor(masterLine(m, 'scale app workers from 2 to 3'));
    const up = await m.waitFor(h => h.messages.slice(mark).find(msg =>
      msg && msg.action === 'agent-egg-pids' && msg.data.pids.length === 3));
    const three = sorted(up.data.pids);
    assert(before.every(pid => three.includes(pid)), `egg-pids ${three}`);
    assert.deepStrictEqual(sorted(m.workers().app), three);
    const added = three.find(pid => !before.includes(pid));
    await l.until(r => r.some(x => x.pid === added));

    mark = m.messages.length;
    m.kill('SIGTTOU');
    await m.waitFor(masterLine(m, 'scale app workers from 3 to 2'));
    const retired = await m.waitFor(masterLine(m, 'app_worker#\\d+:(\\d+) retired \\(code: 0, signal: null\\)'), 30000);
    const gone = Number(retired[1]);
    const down = await m.waitFor(h => h.messages.slice(mark).find(msg =>
      msg && msg.action === 'agent-egg-pids' && msg.data.pids.length === 2));
    assert.deepStrictEqual(sorted(down.data.pids), three.filter(pid => pid !== gone));
    assert.deepStrictEqual(sorted(m.workers().app), sorted(down.data.pids));
    const t = Date.now();
    await l.until(r => r.filter(x => x.t > t).length >= 20);
    await l.stop();
    l.assertAllOk(m);

    // 20 SIGTTIN 50 ms apart: 2 more workers, one booting at a time, the rest capped
    const from = m.output.length;
    for (let i = 0; i < 20; i++) {
      m.kill('SIGTTIN');
      await new Promise(resolve => setTimeout(resolve, 50));
    }
    // the agent hears of 4 serving workers
    await m.waitFor(h => h.messages.slice(mark).find(msg => msg && msg.action === 'agent-egg-pids' && msg.data.pids.length >= 4), 120000);
    // replay the master's lines: a worker boots from its "start" line to its "started at" line
    let booting = 0;
    let maxBooting = 0;
    for (const line of m.output.slice(from).split('\n')) {
      if (/\[master\] app_worker#\d+:\d+ start, state:/.test(line)) booting++;
      else if (/\[master\] app_worker#\d+:\d+ started at/.test(line)) booting--;
      maxBooting = Math.max(maxBooting, booting);
    }
    assert.strictEqual(maxBooting, 1, m.tail(80));
    await m.waitFor(masterLine(m, 'scaled from \\d+ to 4 app workers \\(\\d+ms\\)'), 10000);
    assert(m.lines(/WARN \d+ \[master\] scaling to \d+ app workers capped at 4, the most this master runs \(EGG_CLUSTER_RS_MAX_WORKERS\)/).length >= 1, m.tail(80));
    assert.strictEqual(m.workers().app.length, 4);
    await stop(m);
  });

  it('promise.reload() resolves with ok and the replaced pairs; promise.scale(n) scales', async () => {
    const m = await startMaster('reload', { workers: 2 }, { env: PROD });
    await m.waitReady();
    const before = sorted(m.workers().app);
    m.send({ action: 'runner-reload' });
    const res = (await m.waitFor('runner-reloaded', 90000)).data;
    assert.strictEqual(res.ok, true, JSON.stringify(res));
    assert.strictEqual(typeof res.reason, 'string');
    assert.strictEqual(res.replaced.length, 2);
    const after = sorted(m.workers().app);
    assert.deepStrictEqual(sorted(res.replaced.map(p => p[0])), before);
    assert.deepStrictEqual(sorted(res.replaced.map(p => p[1])), after);
    assert(after.every(pid => !before.includes(pid)));

    m.send({ action: 'runner-scale', data: 3 });
    assert.deepStrictEqual((await m.waitFor('runner-scaled')).data, { ok: true });
    await m.waitFor(masterLine(m, 'scale app workers from 2 to 3'));
    const mark = m.messages.length;
    const up = await m.waitFor(h => h.messages.slice(mark).find(msg =>
      msg && msg.action === 'agent-egg-pids' && msg.data.pids.length === 3), 60000);
    assert(after.every(pid => up.data.pids.includes(pid)), JSON.stringify(up));
    assert.deepStrictEqual(sorted(m.workers().app), sorted(up.data.pids));
    await stop(m);
  });
});
