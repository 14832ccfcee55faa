'use strict';

// What a peer of the master can hold of its resources: the probe/metrics server's and the
// control socket's connections; and what the master does when it is short of file descriptors
// anyway. (Workers' channels: faults.test.js; PROXY headers: sticky-proxy.test.js;
// docs/security.md.)

const assert = require('assert');
const childProcess = require('child_process');
const fs = require('fs');
const net = require('net');
const path = require('path');
const { ROOT, TMP, startMaster, runScript, getFreePort, get, waitUntil, waitDead } = require('./helper');

// src/runtime/metrics.rs and src/runtime/control.rs MAX_CONNECTIONS
const MAX_CONNECTIONS = 128;

const CLI = path.join(ROOT, 'bin/egg-cluster-rs.js');

const fdCount = pid => fs.readdirSync(`/proc/${pid}/fd`).length;

/** @return {Promise<net.Socket>} connected, sending nothing (`where`: a port, or a unix socket's path) */
function idle(where) {
  return new Promise((resolve, reject) => {
    const to = typeof where === 'string' ? { path: where } : { port: where, host: '127.0.0.1' };
    const sock = net.connect(to, () => resolve(sock));
    sock.on('error', err => (sock.connecting ? reject(err) : null));
  });
}

/**
 * Opens `count` idle connections to `where`, one after the other, then waits for the master
 * `pid` to close all but MAX_CONNECTIONS of them (long before any time-out: it accepted them
 * all, so its fd count is what it holds, not the kernel's backlog). Asserts that its fds stayed
 * within the cap throughout.
 * @return {Promise<net.Socket[]>} the connections, for the caller to destroy
 */
async function flood(where, count, pid) {
  const before = fdCount(pid);
  const socks = [];
  let closed = 0;
  let most = before;
  try {
    for (let i = 0; i < count; i++) {
      const sock = await idle(where);
      sock.on('close', () => closed++);
      socks.push(sock);
      if (i % 50 === 0) most = Math.max(most, fdCount(pid));
    }
    await waitUntil(() => {
      most = Math.max(most, fdCount(pid));
      return closed >= count - MAX_CONNECTIONS;
    }, 10000, `the master to close all but ${MAX_CONNECTIONS} (closed ${closed})`);
    assert(most <= before + MAX_CONNECTIONS + 16, `the master held ${most} fds (${before} before)`);
  } catch (err) {
    for (const sock of socks) sock.destroy();
    throw err;
  }
  return socks;
}

/** The soft RLIMIT_NOFILE of `pid`, or sets it (util-linux's prlimit). */
function nofile(pid, soft) {
  if (soft === undefined) return Number(/^Max open files\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'))[1]);
  childProcess.execFileSync('prlimit', [ `--pid=${pid}`, `--nofile=${soft}:` ]);
}

describe('limits', () => {
  it('thousands of idle connections to /metrics: the master\'s fds stay under the cap, /healthz answers meanwhile and after', async () => {
    const metricsPort = await getFreePort();
    const m = await startMaster('basic', { metrics: { port: metricsPort } }, { env: { EGG_SERVER_ENV: 'prod' } });
    await m.waitReady();
    assert.strictEqual((await get(metricsPort, '/healthz')).status, 200);
    const socks = await flood(metricsPort, 3000, m.pid);
    try {
      // a probe connects and asks at once: answered while the idle connections are open
      for (let i = 0; i < 5; i++) assert.strictEqual((await get(metricsPort, '/healthz')).status, 200);
    } finally {
      for (const sock of socks) sock.destroy();
    }
    assert.strictEqual((await get(metricsPort, '/healthz')).status, 200);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
  });

  // issue #32: two clients holding ~10,000 connections each took the master to its fd limit;
  // every refork then failed with EMFILE, and each failure counted as a crash: crash-loop
  // backoff for as long as the flood lasted.
  it('5,000 idle connections to the control socket: the master\'s fds stay bounded, status answers, a killed worker is replaced at once; spawns short of fds are retried, not counted as crashes', async () => {
    fs.mkdirSync(TMP, { recursive: true });
    const tmp = fs.mkdtempSync(path.join(TMP, 'limits-'));
    const env = { EGG_SERVER_ENV: 'prod', TMPDIR: tmp, XDG_RUNTIME_DIR: undefined };
    const m = await startMaster('basic', {}, { env: { ...env, EGG_CLUSTER_RS_REFORK_LIMIT: '3' } });
    const { port } = await m.waitReady();
    const sockPath = path.join(tmp, `egg-cluster-rs-${process.getuid()}`, `${m.pid}.sock`);
    const serving = async () => (await m.clusterStatus()).master.serving;
    const socks = await flood(sockPath, 5000, m.pid);
    try {
      // the CLI asks as soon as it connects: answered while they are held
      const cli = runScript(CLI, [ 'status', `--pid=${m.pid}`, '--json' ], { marker: m.baseDir, home: m.baseDir, env });
      assert.deepStrictEqual(await cli.waitExit(20000), { code: 0, signal: null }, cli.tail());
      assert.strictEqual(JSON.parse(cli.stdout).master.serving, 2);

      // a worker killed meanwhile: replaced at once
      const [ victim ] = m.workers().app;
      process.kill(victim, 'SIGKILL');
      await m.waitFor(new RegExp(`\\[master\\] app_worker#3:(\\d+) start`), 20000);
      await waitUntil(async () => await serving() === 2, 60000, 'two workers serving');
    } finally {
      for (const sock of socks) sock.destroy();
    }

    // Out of file descriptors anyway (no fd number left to it): a killed worker's replacement
    // cannot be spawned. That is no crash of the app: tried again after a short, growing delay,
    // never counted against the refork limit (3 here), and replaced once fds are back. The
    // streak is said when it begins and when it ends, not at each attempt (the status says the
    // next delay).
    const limit = nofile(m.pid);
    const [ victim ] = m.workers().app;
    const from = m.output.length;
    nofile(m.pid, 3);
    try {
      process.kill(victim, 'SIGKILL');
      await m.waitFor(new RegExp(`ERROR \\d+ \\[master\\] cannot spawn app_worker#\\d+: Too many open files \\(os error 24\\): the master is short of a resource, not a crash of the app; trying again in 100ms, then less often \\(up to every 5s\\), said again once spawning works$`, 'm'), 20000);
      await waitUntil(async () => /, trying again in (800|1600|3200|5000)ms$/.test((await m.clusterStatus()).master.reforkHeld || ''), 20000, 'the fourth attempt');
    } finally {
      nofile(m.pid, limit);
    }
    await waitDead([ victim ]);
    await waitUntil(async () => await serving() === 2, 60000, 'two workers serving');
    const since = m.output.slice(from);
    assert.strictEqual(since.match(/cannot spawn app_worker/g).length, 1, m.tail());
    assert.match(since, /INFO \d+ \[master\] spawning works again after \d+ failed attempts in \d+ms/);
    assert.strictEqual((await get(port, '/pid')).status, 200);
    assert.deepStrictEqual(m.lines(/crash loop|died too fast/), []);
    m.kill('SIGTERM');
    assert.strictEqual((await m.waitExit()).code, 0, m.tail());
    fs.rmSync(tmp, { recursive: true, force: true });
  });
});
