'use strict';

const assert = require('assert');
const path = require('path');
const { FIXTURES, copyFixture, track, getFreePort, findProcesses, waitDead } = require('./helper');
const { EGG, probe, assertMasterWithoutEgg } = require('./launch');

describe('egg-mock', () => {
  it('mm.cluster() with a custom framework built on egg-cluster-rs (the master loads no egg)', async () => {
    const mm = require('egg-mock');
    const baseDir = track(copyFixture('framework-app'));
    const loaded = probe(baseDir);
    const app = mm.cluster({
      baseDir,
      customEgg: path.join(FIXTURES, 'framework'),
      port: await getFreePort(),
      workers: 2,
      cache: false,
      coverage: false,
      opt: { env: { ...process.env, ...loaded.env } },
    });
    await app.ready();
    const pids = findProcesses(baseDir).map(p => p.pid);
    assert.strictEqual(pids.length, 4, 'master, agent and 2 app workers');

    await app.httpRequest()
      .get('/')
      .expect(200)
      .expect('hi, egg-cluster-rs-test-framework');

    assertMasterWithoutEgg(loaded.dir, EGG[3], /egg-mock\/lib\/start-cluster/);

    await app.close();
    await waitDead(pids, 10000);
  });
});
