'use strict';

// What a peer of the master can hold of its resources: the probe/metrics server's connections.
// (Workers' channels: faults.test.js; PROXY headers: sticky-proxy.test.js; docs/security.md.)

const assert = require('assert');
const fs = require('fs');
const net = require('net');
const { startMaster, getFreePort, get } = require('./helper');

// src/runtime/metrics.rs MAX_CONNECTIONS
const MAX_CONNECTIONS = 128;

const fdCount = pid => fs.readdirSync(`/proc/${pid}/fd`).length;

/** @return {Promise<net.Socket>} connected, sending nothing */
function idle(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' }, () => resolve(sock));
    sock.on('error', err => (sock.connecting ? reject(err) : null));
  });
}

describe('limits', () => {
  it('thousands of idle connections to /metrics: the master\'s fds stay under the cap, /healthz answers meanwhile and after', async () => {
    const metricsPort = await getFreePort();
    const m = await startMaster('basic', { metrics: { port: metricsPort } }, { env: { EGG_SERVER_ENV: 'prod' } });
    await m.waitReady();
    assert.strictEqual((await get(metricsPort, '/healthz')).status, 200);
    const before = fdCount(m.pid);
    const socks = [];
    let closedByMaster = 0;
    let most = before;
    try {
      for (let i = 0; i < 3000; i++) {
        const sock = await idle(metricsPort);
        sock.on('close', () => closedByMaster++);
        socks.push(sock);
        if (i % 50 === 0) most = Math.max(most, fdCount(m.pid));
      }
      // the master accepted them all (all but the newest closed, long before their 5 s
      // time-out), so its count is what it holds, not the kernel's backlog
      const t = Date.now();
      while (closedByMaster < 3000 - MAX_CONNECTIONS && Date.now() - t < 3000) {
        most = Math.max(most, fdCount(m.pid));
        await new Promise(resolve => setTimeout(resolve, 20));
      }
      most = Math.max(most, fdCount(m.pid));
      assert(most <= before + MAX_CONNECTIONS + 16, `the master held ${most} fds (${before} before)`);
      assert(closedByMaster >= 3000 - MAX_CONNECTIONS, `the master closed ${closedByMaster}`);
      // a probe connects and asks at once: answered while the idle connections are open
      for (let i = 0; i < 5; i++) assert.strictEqual((await get(metricsPort, '/healthz')).status, 200);
    } finally {
      for (const sock of socks) sock.destroy();
    }
    assert.strictEqual((await get(metricsPort, '/healthz')).status, 200);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });
});
