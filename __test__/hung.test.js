'use strict';

// Self-healing (docs/self-healing.md): a worker whose event loop is stuck is found by its
// missing heartbeat, reported (a diagnostic report that names where it is stuck), replaced in
// its slot and SIGKILLed, while the others serve; a worker that never listens is replaced after
// the boot timeout; /metrics shows each child's event-loop lag.

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const { startMaster, getFreePort, get, waitDead, waitUntil, isAlive, copyFixture } = require('./helper');

const PROD = { EGG_SERVER_ENV: 'prod' };

// egg_cluster_<name>{role,id} values of a scrape, by a regexp on the text (ops.test.js checks
// the format itself)
async function metric(port, name, labels = '') {
  const res = await get(port, '/metrics');
  assert.strictEqual(res.status, 200, res.body);
  const re = new RegExp(`^egg_cluster_${name}${labels ? `\\{${labels}\\}` : ''} (\\S+)$`, 'mg');
  return [ ...res.body.matchAll(re) ].map(m => Number(m[1]));
}

// GET /pid in a loop until stopped: every answer and every failure
function keepRequesting(port) {
  const state = { ok: 0, failures: [], stop: false };
  state.done = (async () => {
    while (!state.stop) {
      try {
        const res = await get(port, '/pid', { timeout: 20000 });
        if (res.status === 200) state.ok++;
        else state.failures.push(`status ${res.status}`);
      } catch (err) {
        state.failures.push(err.message);
      }
    }
  })();
  return state;
}

describe('hung workers', function() {
  this.timeout(120000);

  it('a worker stuck in a loop is reported with where it is stuck, replaced, then SIGKILLed; the others serve', async () => {
    const metricsPort = await getFreePort();
    const m = await startMaster('hung', { workerTimeout: 5000, metrics: { port: metricsPort } }, { env: PROD });
    const { port } = await m.waitReady();
    assert.strictEqual((await get(metricsPort, '/healthz')).status, 200);
    const load = keepRequesting(port);

    const hungPid = Number((await get(port, '/block')).body);
    const line = await m.waitFor(new RegExp(`ERROR \\d+ nodejs\\.WorkerHungError: \\[master\\] app_worker#\\d+:${hungPid} has not answered for \\d+ s \\(event loop blocked\\) at \\S*stuckForever.*? \\(app/router\\.js:\\d+:\\d+\\).*; report: (run/hung\\.${hungPid}\\.report\\.json); replacing it$`, 'm'), 30000);
    // unhealthy until it is replaced (a replacement needs seconds to boot)
    assert.strictEqual((await get(metricsPort, '/healthz')).status, 503);
    assert.deepStrictEqual(await metric(metricsPort, 'hung_children'), [ 1 ]);

    // Node's diagnostic report, written while the JS thread was stuck, names the function
    const report = JSON.parse(fs.readFileSync(path.join(m.baseDir, line[1]), 'utf8'));
    assert.strictEqual(report.header.processId, hungPid);
    assert(report.javascriptStack.stack.some(f => /^at \S*stuckForever.* \(.*app\/router\.js:\d+:\d+\)$/.test(f)), report.javascriptStack.stack.join('\n'));

    await m.waitFor(/\[master\] rolling reload \(workerTimeout\) done: 1 app worker\(s\) replaced/, 60000);
    await waitDead([ hungPid ], 10000);
    load.stop = true;
    await load.done;
    // One request at a time: at most the one the stuck worker had accepted just before it got
    // stuck is lost (reset when it is killed); every other one was served by the other worker.
    assert(load.failures.length <= 1 && load.failures.every(f => /ECONNRESET|socket hang up/.test(f)), load.failures.join('\n'));
    assert(load.ok > 0);

    assert.strictEqual((await get(metricsPort, '/healthz')).status, 200);
    assert.deepStrictEqual(await metric(metricsPort, 'hung_replacements_total'), [ 1 ]);
    assert.deepStrictEqual(await metric(metricsPort, 'hung_children'), [ 0 ]);
    const pids = new Set();
    for (let i = 0; i < 40 && pids.size < 2; i++) pids.add(Number((await get(port, '/pid')).body));
    assert.strictEqual(pids.size, 2);
    assert(!pids.has(hungPid));
    await m.cleanup();
  });

  it('egg 4: a stuck worker is reported with where it is stuck and replaced', async () => {
    const baseDir = copyFixture('hung');
    fs.writeFileSync(path.join(baseDir, 'package.json'), JSON.stringify({ name: 'hung', private: true, egg: { framework: 'egg4' } }));
    const m = await startMaster(null, { workerTimeout: 5000 }, { env: PROD, baseDir });
    const { port } = await m.waitReady(90000);
    const hungPid = Number((await get(port, '/block')).body);
    await m.waitFor(new RegExp(`\\[master\\] app_worker#\\d+:${hungPid} has not answered for \\d+ s \\(event loop blocked\\) at \\S*stuckForever.*?; report: run/hung\\.${hungPid}\\.report\\.json; replacing it$`, 'm'), 30000);
    await m.waitFor(/\[master\] rolling reload \(workerTimeout\) done: 1 app worker\(s\) replaced/, 90000);
    await waitDead([ hungPid ], 10000);
    await m.cleanup();
  });

  it('worker_threads: a stuck app thread is replaced and worker.terminate() ends it', async () => {
    const m = await startMaster('hung', { startMode: 'worker_threads', workerTimeout: 5000 }, { env: PROD });
    const { port } = await m.waitReady();
    const load = keepRequesting(port);
    const tid = Number((await get(port, '/block')).body);
    await m.waitFor(new RegExp(`\\[master\\] app_worker#\\d+:${tid} has not answered for \\d+ s \\(event loop blocked\\); report: none .*; replacing it$`, 'm'), 30000);
    await m.waitFor(/\[master\] rolling reload \(workerTimeout\) done: 1 app worker\(s\) replaced/, 60000);
    load.stop = true;
    await load.done;
    // as for processes: at most the request the stuck thread had accepted is lost
    assert(load.failures.length <= 1 && load.failures.every(f => /ECONNRESET|socket hang up/.test(f)), load.failures.join('\n'));
    const ids = new Set();
    for (let i = 0; i < 40 && ids.size < 2; i++) ids.add(Number((await get(port, '/pid')).body));
    assert.strictEqual(ids.size, 2);
    assert(!ids.has(tid));
    // the master process goes on: the thread is gone, not the process
    assert(isAlive(m.pid));
    await m.cleanup();
  });

  it('an app worker that never listens is killed after the boot timeout and reforked', async () => {
    const metricsPort = await getFreePort();
    const m = await startMaster('hung', { metrics: { port: metricsPort } }, { env: { ...PROD, EGG_CLUSTER_RS_START_TIMEOUT: '15000' } });
    const { port } = await m.waitReady();
    const marker = path.join(m.baseDir, 'run', 'never-listen');
    fs.mkdirSync(path.dirname(marker), { recursive: true });
    fs.writeFileSync(marker, '');
    const victim = Number((await get(port, '/pid')).body);
    process.kill(victim, 'SIGKILL');
    const line = await m.waitFor(/nodejs\.WorkerStartTimeoutError: \[master\] app_worker#\d+:(\d+) did not listen within 15000ms of its start \(state: \w+\); killing it$/m, 30000);
    fs.unlinkSync(marker);
    await waitDead([ Number(line[1]) ], 10000);
    await waitUntil(async () => (await metric(metricsPort, 'workers_serving'))[0] === 2, 60000, '2 workers serving');
    assert.deepStrictEqual(await metric(metricsPort, 'hung_replacements_total'), [ 1 ]);
    await m.cleanup();
  });

  it('/metrics shows the event-loop lag of each child, rising for a worker made slow; a hung agent is reported, killed and reforked', async () => {
    const metricsPort = await getFreePort();
    const m = await startMaster('hung', { workers: 1, workerTimeout: 5000, metrics: { port: metricsPort } }, { env: PROD });
    const { port } = await m.waitReady();
    await waitUntil(async () => (await metric(metricsPort, 'event_loop_lag_seconds', 'role="(app|agent)",id="1"')).length === 2, 10000, 'a lag for the agent and the app worker');
    // the start-up's synchronous loading shows first; an idle worker's lag settles near 0
    await waitUntil(async () => (await metric(metricsPort, 'event_loop_lag_seconds', 'role="app",id="1"'))[0] < 0.1, 20000, 'an idle worker\'s lag');
    await get(port, '/slow');
    // 300 ms of busy loop every second: a tick now and then waits for it
    const lag = await waitUntil(async () => {
      const [ v ] = await metric(metricsPort, 'event_loop_lag_seconds', 'role="app",id="1"');
      // the delay monitor's 100 ms resolution may take up to that off a 300 ms block
      return v >= 0.15 && v;
    }, 30000, 'the app worker\'s lag to rise');
    assert(lag <= 1, `lag: ${lag}`);
    // slow is not hung
    assert.strictEqual((await get(metricsPort, '/healthz')).status, 200);

    // The agent's event loop blocked: reported with where, SIGKILLed (it cannot close), a new
    // agent after egg's 1 s; the app worker serves throughout (it does not need the agent).
    const agentPid = m.workers().agent[0];
    const load = keepRequesting(port);
    await get(port, '/block-agent');
    const line = await m.waitFor(new RegExp(`ERROR \\d+ nodejs\\.WorkerHungError: \\[master\\] agent_worker#1:${agentPid} has not answered for \\d+ s \\(event loop blocked\\) at \\S*agentStuckForever.*? \\(agent\\.js:\\d+:\\d+\\).*; report: (run/hung\\.${agentPid}\\.report\\.json); killing it \\(egg reforks a dead agent after 1s\\)$`, 'm'), 30000);
    const report = JSON.parse(fs.readFileSync(path.join(m.baseDir, line[1]), 'utf8'));
    assert(report.javascriptStack.stack.some(f => /agentStuckForever/.test(f)), report.javascriptStack.stack.join('\n'));
    await waitDead([ agentPid ], 10000);
    const next = await m.waitFor(/\[master\] agent_worker#2:(\d+) started \(\d+ms\)/, 30000);
    assert(isAlive(Number(next[1])));
    load.stop = true;
    await load.done;
    assert.deepStrictEqual(load.failures, []);
    assert(load.ok > 0);
    await m.cleanup();
  });
});
