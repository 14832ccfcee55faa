'use strict';

const assert = require('assert');
const { startMaster, get } = require('./helper');

// fixtures/apps/cluster-client: a plugin whose RegistryClient runs as the
// cluster-client leader in the agent and as followers in the app workers, over
// the clusterPort the master picked.
describe('cluster-client', () => {
  it('followers in every worker get what the leader (agent) published', async () => {
    const m = await startMaster('cluster-client');
    await m.waitReady();
    const { agent, app } = m.workers();
    assert.strictEqual(agent.length, 1);
    const data = await m.waitForMessages('registry-data', 2);
    assert.deepStrictEqual(data.map(msg => msg.data.pid).sort(), app.sort());
    for (const msg of data) {
      assert.deepStrictEqual(msg.data.list, [ `leader:${agent[0]}` ]);
    }
    // a follower invokes a leader method over the cluster port
    const res = await get(m.options.port, '/');
    assert.strictEqual(res.status, 200);
    assert.strictEqual(res.body, `leader:${agent[0]}`);

    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });
});
