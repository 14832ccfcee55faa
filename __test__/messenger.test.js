'use strict';

const assert = require('assert');
const { REFERENCE, startMaster } = require('./helper');

// fixtures/apps/messenger: app.js and agent.js relay what they receive to the
// parent as { action: 'app-got' | 'agent-got', data: { action, data, pid } }.
describe('messenger', () => {
  let m;
  let agentPid;
  let appPids;

  const got = (who, action, where) => h => h.messages.filter(msg =>
    msg.action === `${who}-got` && msg.data.action === action && (!where || where(msg.data)));

  async function start() {
    m = await startMaster('messenger');
    await m.waitReady();
    const hellos = await m.waitForMessages('app-hello', 2);
    appPids = hellos.map(msg => msg.data).sort();
    agentPid = (await m.waitFor('agent-hello')).data;
    assert.deepStrictEqual(appPids, m.workers().app.sort());
    assert.deepStrictEqual([ agentPid ], m.workers().agent);
  }

  async function stop() {
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  }

  it('routes app <-> agent, broadcasts, parent <-> workers, string messages', async () => {
    await start();

    // app -> agent (sendToAgent from every worker), message from app to parent
    const appToAgent = await m.waitFor(h => { const l = got('agent', 'app-to-agent')(h); return l.length >= 2 && l; });
    assert.deepStrictEqual(appToAgent.map(msg => msg.data.data.pid).sort(), appPids);
    for (const msg of appToAgent) {
      assert.deepStrictEqual(Object.keys(msg).sort(), [ 'action', 'data', 'from', 'to' ]);
      assert.strictEqual(msg.from, 'agent');
      assert.strictEqual(msg.to, 'parent');
    }

    // agent -> app (sendToApp): every worker gets it once
    const agentToApp = await m.waitFor(h => { const l = got('app', 'agent-to-app')(h); return l.length >= 2 && l; });
    assert.deepStrictEqual(agentToApp.map(msg => msg.data.pid).sort(), appPids);
    assert.deepStrictEqual(agentToApp[0].data.data, { from: agentPid });

    // agent broadcast: all workers and the agent itself
    const bcApp = await m.waitFor(h => { const l = got('app', 'agent-broadcast')(h); return l.length >= 2 && l; });
    assert.deepStrictEqual(bcApp.map(msg => msg.data.pid).sort(), appPids);
    await m.waitFor(h => got('agent', 'agent-broadcast')(h).length >= 1);

    // parent -> app (to all workers), parent -> agent
    m.send({ action: 'parent-to-app', to: 'app', data: { n: 1 } });
    m.send({ action: 'parent-to-agent', to: 'agent', data: { n: 2 } });
    const p2app = await m.waitFor(h => { const l = got('app', 'parent-to-app')(h); return l.length >= 2 && l; });
    assert.deepStrictEqual(p2app.map(msg => msg.data.pid).sort(), appPids);
    assert.deepStrictEqual(p2app[0].data.data, { n: 1 });
    const p2agent = await m.waitFor(h => got('agent', 'parent-to-agent')(h)[0]);
    assert.deepStrictEqual(p2agent.data.data, { n: 2 });

    // process.send('foo') in an app worker -> { action: 'foo', data: 'foo' } to the agent
    m.send({ action: 'cmd', to: 'app', data: { name: 'send-string', pid: appPids[0] } });
    const foo = await m.waitFor(h => got('agent', 'foo')(h)[0]);
    assert.strictEqual(foo.data.data, 'foo');
    // and process.send('bar') in the agent -> to every app worker
    m.send({ action: 'cmd', to: 'agent', data: { name: 'send-string' } });
    const bar = await m.waitFor(h => { const l = got('app', 'bar')(h); return l.length >= 2 && l; });
    assert.deepStrictEqual(bar.map(msg => msg.data.data), [ 'bar', 'bar' ]);

    await stop();
  });

  it('sendTo(pid) reaches only that process (app -> app, agent -> app, app -> agent)', async () => {
    await start();
    const [ a, b ] = appPids;

    // agent -> one app worker
    m.send({ action: 'cmd', to: 'agent', data: { name: 'send-to', target: b, action: 'to-pid', data: 'from-agent' } });
    await m.waitFor(h => got('app', 'after-to-pid', d => d.data.from === agentPid)(h).length >= 2);
    let toPid = got('app', 'to-pid', d => d.data === 'from-agent')(m);
    assert.deepStrictEqual(toPid.map(msg => msg.data.pid), [ b ]);

    // app a -> app b
    m.send({ action: 'cmd', to: 'app', data: { name: 'send-to', pid: a, target: b, action: 'to-pid', data: 'from-app' } });
    await m.waitFor(h => got('app', 'after-to-pid', d => d.data.from === a)(h).length >= 2);
    toPid = got('app', 'to-pid', d => d.data === 'from-app')(m);
    assert.deepStrictEqual(toPid.map(msg => msg.data.pid), [ b ]);

    // app a -> agent, by the agent's pid
    m.send({ action: 'cmd', to: 'app', data: { name: 'send-to', pid: a, target: agentPid, action: 'to-pid', data: 'to-agent' } });
    const toAgent = await m.waitFor(h => got('agent', 'to-pid', d => d.data === 'to-agent')(h)[0]);
    assert.strictEqual(toAgent.data.pid, agentPid);
    await m.waitFor(h => got('app', 'after-to-pid', d => d.data.from === a)(h).length >= 4);
    assert.deepStrictEqual(got('app', 'to-pid', d => d.data === 'to-agent')(m), []);

    // app -> master, by the master's pid, and with to:'master': left to JS (the Promise's `master` emitter)
    m.send({ action: 'cmd', to: 'app', data: { name: 'send-to', pid: a, target: m.pid, action: 'custom-master-action', data: { via: 'pid' } } });
    m.send({ action: 'cmd', to: 'app', data: { name: 'to-master', pid: a } });
    // parent -> master (no `to`: defaults to the master)
    m.send({ action: 'custom-master-action', data: { via: 'parent' } });
    const masterGot = await m.waitForMessages('master-got', 3);
    assert.deepStrictEqual(masterGot.map(msg => msg.data.via).sort(), [ 'parent', 'pid', 'to' ]);

    await stop();
  });

  it('egg-pids: the agent learns both worker pids, the workers the agent pid', async () => {
    await start();
    const agentPids = await m.waitFor(h => got('agent', 'egg-pids', d => d.data.length === 2)(h)[0]);
    assert.deepStrictEqual(agentPids.data.data.slice().sort(), appPids);
    if (!REFERENCE) {
      // (egg-cluster 2.5 sends [agentPid] to the apps before any worker exists: they never get it)
      const appGot = await m.waitFor(h => { const l = got('app', 'egg-pids')(h); return l.length >= 2 && l; });
      assert.deepStrictEqual(appGot.map(msg => msg.data.pid).sort(), appPids);
      for (const msg of appGot) assert.deepStrictEqual(msg.data.data, [ agentPid ]);
    }
    await stop();
  });

  it('keeps a lone surrogate intact (parent -> app, app -> agent -> parent)', async () => {
    await start();
    const value = '\ud800x';
    m.send({ action: 'surrogate-to-app', to: 'app', data: value });
    const back = await m.waitFor(h => { const l = got('app', 'surrogate-to-app')(h); return l.length >= 2 && l; });
    for (const msg of back) {
      assert(msg.data.data === value, `got ${JSON.stringify(msg.data.data)}`);
    }
    m.send({ action: 'cmd', to: 'app', data: { name: 'surrogate-to-agent', pid: appPids[0], value } });
    const viaAgent = await m.waitFor(h => got('agent', 'surrogate')(h)[0]);
    assert(viaAgent.data.data === value, `got ${JSON.stringify(viaAgent.data.data)}`);
    await stop();
  });
});
