'use strict';

// egg 4 apps (egg 4 installed side by side as the `egg4` alias) under this master: the dialect
// is picked from the framework (here egg 4 itself), the workers are lib/egg4/*.js (started through lib/@eggjs/cluster/dist/esm/), and the
// master speaks @eggjs/cluster 3's protocol (app-start, receiverWorkerId, its log lines).

const assert = require('assert');
const path = require('path');
const { REFERENCE, ROOT, startMaster, get } = require('./helper');

const EGG4 = path.join(ROOT, 'node_modules/egg4');
const EGG4_VERSION = require(path.join(EGG4, 'package.json')).version;
const PROD = { EGG_SERVER_ENV: 'prod' };

const got = (who, action, where) => h => h.messages.filter(msg =>
  msg.action === `${who}-got` && msg.data.action === action && (!where || where(msg.data)));

(REFERENCE ? describe.skip : describe)('egg 4: start, ready, messenger, close', () => {
  async function start(opts = {}, env = PROD) {
    const m = await startMaster('egg4-app', opts, { env });
    const ready = await m.waitReady(90000);
    const hellos = await m.waitForMessages('app-hello', opts.workers || 2);
    const agent = await m.waitFor('agent-hello');
    return { m, ready, appPids: hellos.map(msg => msg.data.pid).sort(), agentPid: agent.data.pid, hellos, agent };
  }

  async function stop(m) {
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  }

  it('prod: @eggjs/cluster\'s lines, egg-ready to parent, apps and agent, HTTP served by the egg 4 workers', async () => {
    const { m, ready, appPids, agentPid, hellos, agent } = await start();
    assert.deepStrictEqual(ready, { port: m.options.port, address: `http://127.0.0.1:${m.options.port}`, protocol: 'http' });
    assert.match(m.output, /\[master\] =================== egg start 🥚🥚🥚🥚 =====================/);
    // egg as the framework: @eggjs/cluster's line, with where egg was found and the dialect
    assert(m.lines(/\[master\] egg version /).some(l => l.endsWith(`[master] egg version ${EGG4_VERSION} from ${EGG4}: egg 4 dialect (@eggjs/cluster's protocol)`)), m.tail());
    assert.match(m.output, new RegExp(`\\[master\\] egg started on http://127\\.0\\.0\\.1:${m.options.port} \\(\\d+ms\\)`));
    // the egg 4 worker scripts run, and the workers got the options in egg-ready
    const w = m.workers();
    assert.deepStrictEqual(w.app.sort(), appPids);
    assert.deepStrictEqual(w.agent, [ agentPid ]);
    for (const pid of [ ...w.app, ...w.agent ]) {
      assert.match(require('fs').readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /@eggjs\/cluster\/dist\/esm\/(agent|app)_worker\.js/);
    }
    for (const msg of [ ...hellos, agent ]) {
      assert.strictEqual(msg.data.ready.framework, EGG4);
      assert.strictEqual(msg.data.ready.port, m.options.port);
    }
    const seen = new Set();
    for (let i = 0; i < 40 && seen.size < 2; i++) {
      const res = await get(m.options.port, '/', { headers: { connection: 'close' } });
      assert.strictEqual(res.status, 200, res.body);
      const body = JSON.parse(res.body);
      assert.strictEqual(body.egg, EGG4);
      seen.add(body.pid);
    }
    assert(seen.size >= 1);
    // close: app workers, then the agent, then exit 0
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
    const out = m.output;
    const apps = out.indexOf('send kill SIGTERM to app workers');
    const agentKill = out.indexOf('send kill SIGTERM to agent worker');
    assert(apps > 0 && agentKill > apps, m.tail());
    assert.match(out, /\[master\] exit with code:0/);
    assert.deepStrictEqual(m.children(), []);
  });

  it('local: starts and stops (no refork, DEBUG start lines hidden at INFO)', async () => {
    const { m, ready } = await start({ workers: 1 }, { EGG_SERVER_ENV: 'local' });
    assert.strictEqual(ready.port, m.options.port);
    assert.doesNotMatch(m.output, /egg start 🥚/);
    await stop(m);
  });

  it('local: a dead app worker is not reforked, with the lines of @eggjs/cluster 3\'s cfork 2 (slave fields, reforkCount)', async () => {
    const { m, appPids } = await start({ workers: 2 }, { EGG_SERVER_ENV: 'local' });
    const cfork = text => new RegExp(`^\\[[\\d-]+ [\\d:.]+\\] \\[cfork:master:${m.pid}\\] ${text}$`, 'm');
    process.kill(appPids[0], 'SIGKILL');
    await m.waitFor(h => cfork('don\'t fork new work \\(refork: false, reforkCount: 0\\)').test(h.stderr), 20000);
    await m.waitFor(h => cfork(`worker:${appPids[0]} exit \\(code: null, exitedAfterDisconnect: false, state: dead, isDead: true, isExpected: (?:true|false), worker\\.disableRefork: false, isSlave: false, slaveIndex: \\)`).test(h.stderr), 20000);
    const diedUnexpected = m.stderr.match(/WorkerDiedUnexpectedError: worker:\d+ died unexpected \(.*\)$/m);
    if (diedUnexpected) assert.match(diedUnexpected[0], /, state: dead, isSalve: false, salveIndex: \)$/);
    assert.doesNotMatch(m.stderr, /\(refork: false\)$/m);
    assert.strictEqual((await get(m.options.port, '/')).status, 200);
    await stop(m);
  });

  it('messenger: app <-> agent, broadcasts, parent <-> workers, egg-pids, sendTo by worker id, to master', async () => {
    const { m, appPids, agentPid } = await start();
    const [ a, b ] = appPids;

    const appToAgent = await m.waitFor(h => { const l = got('agent', 'app-to-agent')(h); return l.length >= 2 && l; });
    assert.deepStrictEqual(appToAgent.map(msg => msg.data.data.pid).sort(), appPids);
    const agentToApp = await m.waitFor(h => { const l = got('app', 'agent-to-app')(h); return l.length >= 2 && l; });
    assert.deepStrictEqual(agentToApp.map(msg => msg.data.pid).sort(), appPids);
    await m.waitFor(h => got('app', 'agent-broadcast')(h).length >= 2 && got('agent', 'agent-broadcast')(h).length >= 1);

    // egg-pids: the agent learns both workers, each worker the agent (sent to it by worker id)
    const agentPids = await m.waitFor(h => got('agent', 'egg-pids', d => d.data.length === 2)(h)[0]);
    assert.deepStrictEqual(agentPids.data.data.slice().sort(), appPids);
    const appGot = await m.waitFor(h => { const l = got('app', 'egg-pids')(h); return l.length >= 2 && l; });
    for (const msg of appGot) assert.deepStrictEqual(msg.data.data, [ agentPid ]);

    m.send({ action: 'parent-to-app', to: 'app', data: { n: 1 } });
    m.send({ action: 'parent-to-agent', to: 'agent', data: { n: 2 } });
    await m.waitFor(h => got('app', 'parent-to-app')(h).length >= 2);
    assert.deepStrictEqual((await m.waitFor(h => got('agent', 'parent-to-agent')(h)[0])).data.data, { n: 2 });

    // agent -> app b; app a -> app b; app a -> agent: egg 4's sendTo, and receiverWorkerId alone
    m.send({ action: 'cmd', to: 'agent', data: { name: 'send-to', target: b, action: 'to-pid', data: 'from-agent' } });
    await m.waitFor(h => got('app', 'after-to-pid', d => d.data.from === agentPid)(h).length >= 2);
    m.send({ action: 'cmd', to: 'app', data: { name: 'send-to', pid: a, target: b, action: 'to-pid', data: 'from-app' } });
    await m.waitFor(h => got('app', 'after-to-pid', d => d.data.from === a)(h).length >= 2);
    m.send({ action: 'cmd', to: 'app', data: { name: 'send-to', pid: a, target: agentPid, action: 'to-pid', data: 'to-agent' } });
    await m.waitFor(h => got('agent', 'to-pid', d => d.data === 'to-agent-by-worker-id')(h)[0]);
    await m.waitFor(h => got('app', 'after-to-pid', d => d.data.from === a)(h).length >= 4);
    const toPid = got('app', 'to-pid')(m).map(msg => `${msg.data.pid}:${msg.data.data}`).sort();
    assert.deepStrictEqual(toPid, [
      `${b}:from-agent`, `${b}:from-agent-by-worker-id`, `${b}:from-app`, `${b}:from-app-by-worker-id`,
    ].sort());
    assert.deepStrictEqual(got('agent', 'to-pid')(m).map(msg => msg.data.data).sort(), [ 'to-agent', 'to-agent-by-worker-id' ]);

    // app -> master: left to JS (promise.master)
    m.send({ action: 'cmd', to: 'app', data: { name: 'to-master', pid: a } });
    assert.strictEqual((await m.waitFor('master-got')).data.via, 'to');
    await stop(m);
  });
});
