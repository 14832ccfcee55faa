'use strict';

// A receiver that falls behind holds back the children sending to it (the
// master stops reading their channels) instead of losing their messages; one
// that does not read at all for long ends in the old drop + warning, and the
// rest of the cluster goes on.
const assert = require('assert');
const { REFERENCE, startMaster, isAlive } = require('./helper');

const MIB = 1024 * 1024;
const SIZE = 64 * 1024;
const DROP_LINE = /drop|not reading/i;

function waitMessage(m, action, where, from = 0, timeout = 10000) {
  return m.waitFor(h => h.messages.slice(from).find(msg => msg && msg.action === action && (!where || where(msg))), timeout);
}

let echoSeq = 0;

/** parent -> master -> worker -> master -> parent */
async function echo(m, role, pid, timeout = 10000) {
  const id = `${process.pid}-${++echoSeq}`;
  const msg = { action: 'echo', to: role, data: { id } };
  if (role === 'app') msg.receiverPid = String(pid);
  m.send(msg);
  const reply = await waitMessage(m, 'echo-reply', r => r.data.id === id, 0, timeout);
  assert.strictEqual(reply.data.pid, pid);
  return reply.data;
}

async function stop(m) {
  m.kill('SIGTERM');
  assert.strictEqual((await m.waitExit()).code, 0, m.tail());
}

describe('backpressure', () => {
  it('an agent that stops reading for a while gets every message, in order, none dropped', async function() {
    // 2 workers x 320 x 64 KiB = 40 MiB sent while the agent reads nothing: more than the
    // 32 MiB a receiver may have queued before the master dropped messages to it.
    const COUNT = 320;
    const BLOCK_MS = 4000;
    const m = await startMaster('backpressure', { workers: 2 });
    await m.waitReady();
    const apps = m.workers().app;
    const [ agent ] = m.workers().agent;

    const mark = m.messages.length;
    m.send({ action: 'bp-block', to: 'agent', data: { ms: BLOCK_MS } });
    await waitMessage(m, 'bp-blocking', null, mark);
    m.send({ action: 'bp-send', to: 'app', data: { count: COUNT, size: SIZE } });
    await waitMessage(m, 'bp-unblocked', null, mark, 30000);
    const sent = await m.waitForMessages('bp-sent', apps.length, null, 60000);
    assert.deepStrictEqual(sent.map(x => x.data.pid).sort(), apps.slice().sort());
    assert(COUNT * SIZE * apps.length > 32 * MIB);

    // (the report request is queued for the agent behind every message the apps sent)
    m.send({ action: 'bp-report', to: 'agent' });
    const report = (await waitMessage(m, 'bp-report', x => x.data.pid === agent, mark, 30000)).data.got;
    for (const pid of apps) {
      assert(report[pid], `nothing from ${pid}: ${JSON.stringify(report)}\n${m.tail()}`);
      assert.deepStrictEqual(report[pid].errors, [], `out of order from ${pid}`);
      assert.strictEqual(report[pid].count, COUNT, `the agent got ${report[pid].count} of ${COUNT} from ${pid}\n${m.tail()}`);
    }
    assert.deepStrictEqual(m.lines(DROP_LINE), []);
    await echo(m, 'agent', agent);
    await stop(m);
  });

  it('a receiver that never reads ends in the drop warning and the rest of the cluster goes on', async function() {
    if (REFERENCE) this.skip();
    this.timeout(120000);
    const COUNT = 1000; // 64 MiB for one stopped app worker
    const m = await startMaster('backpressure', { workers: 2 });
    await m.waitReady();
    const [ victim, other ] = m.workers().app.slice().sort((a, b) => a - b);
    const [ agent ] = m.workers().agent;

    process.kill(victim, 'SIGSTOP');
    try {
      const mark = m.messages.length;
      const from = m.output.length;
      m.send({ action: 'bp-flood', to: 'agent', data: { target: victim, count: COUNT, size: SIZE } });
      // While the agent is held back, the parent and the other worker still talk.
      await echo(m, 'app', other);
      // The master gives up holding the agent back and drops what the victim cannot take.
      const warning = new RegExp(`app_worker#\\d+:${victim}\\b.*not reading`);
      await m.waitFor(h => h.output.slice(from).match(warning), 60000);
      await waitMessage(m, 'bp-flood-done', x => x.data.pid === agent, mark, 60000);
      // The agent relays again, both ways.
      await echo(m, 'agent', agent);
      m.send({ action: 'bp-send', to: 'app', receiverPid: String(other), data: { count: 64, size: 16 } });
      await waitMessage(m, 'bp-sent', x => x.data.pid === other, mark);
      m.send({ action: 'bp-report', to: 'agent' });
      const report = (await waitMessage(m, 'bp-report', x => x.data.pid === agent, mark)).data.got;
      assert.strictEqual(report[other] && report[other].count, 64, JSON.stringify(report));
      assert(isAlive(victim), 'the stopped worker was killed');
    } finally {
      process.kill(victim, 'SIGCONT');
    }
    const reply = await echo(m, 'app', victim, 30000);
    assert(reply.bigCount < COUNT, `the stopped worker got all ${COUNT} messages`);
    await stop(m);
  });
});
