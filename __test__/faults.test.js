'use strict';

// Faults: workers dying after ready (production and local), the refork limit
// and its backoff, the agent dying, deaths before ready, the health check, a
// signal before ready, bad bytes from a child, a child that stops reading.
//
// fixtures/apps/faults: app.js and agent.js report to the parent (this test)
// what they get from the master (`app-egg-ready`, `app-egg-pids`,
// `agent-egg-pids`, ...), answer `echo`, and misbehave on command (GET
// /die?code=N, `raw` bytes on their IPC fd, `close-channel`, `flood-big`).
// During each fault a background client (Hammer) keeps sending GET /pid, one
// request at a time: every answer must be a 200.
//
// With EGG_CLUSTER_RS_TEST_REFERENCE=1 (egg-cluster 2.5's master) the tests of
// what egg-cluster does not have (refork backoff, EGG_CLUSTER_RS_* variables,
// bad input, a child that stops reading) are skipped.

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const EventEmitter = require('events');
const {
  TS, REFERENCE, copyFixture, startMaster, get, waitDead, isAlive, findProcesses, logTime,
} = require('./helper');

// egg-cluster's master hands connections out round-robin (Node's default
// scheduling): one handed to a worker as it dies is lost and the hammer sees a
// timeout. Our master shares the listening socket (a connection waits in the
// kernel's queue for whichever worker accepts); have the reference do the same.
const SCHED = REFERENCE ? { NODE_CLUSTER_SCHED_POLICY: 'none' } : {};
const PROD = { EGG_SERVER_ENV: 'prod', ...SCHED };
const LOCAL = { EGG_SERVER_ENV: 'local', ...SCHED };
const MIB = 1024 * 1024;

// cfork's console lines: "[2024-01-01 00:00:00.000] [cfork:master:<pid>] ..." (utility.logDate())
const CFORK_DATE = String.raw`\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\]`;

function byNumber(a, b) {
  return a - b;
}

function sorted(list) {
  return [ ...list ].sort(byNumber);
}

// a master line: "<ts> <level> <master pid> [master] <text>" (text is a regexp source)
function masterLine(m, text, level = 'INFO') {
  return new RegExp(`${TS}${level} ${m.pid} \\[master\\] ${text}$`, 'm');
}

// a cfork line printed by this master (text is a regexp source)
function cforkLine(m, text) {
  return new RegExp(`^${CFORK_DATE} \\[cfork:master:${m.pid}\\] ${text}$`, 'm');
}

// "<ts> ERROR <master pid> nodejs.AppWorkerDiedError: [master] app_worker#N:<pid> died (...), current workers: [...]"
function appDiedLine(m, pid, { code, signal = 'null' }) {
  // egg-cluster prints `code: undefined` (a cluster Worker has no exitCode); we print the real one
  const codeRe = REFERENCE ? 'undefined' : String(code);
  return new RegExp(`${TS}ERROR ${m.pid} nodejs\\.AppWorkerDiedError: \\[master\\] app_worker#(\\d+):${pid} died ` +
    `\\(code: ${codeRe}, signal: ${signal}, suicide: false, state: dead\\), current workers: (\\[[\\d,]*\\])$`, 'm');
}

/**
 * The time on a log line: egg-logger's "YYYY-MM-DD HH:mm:ss,SSS ..." or
 * cfork's "[YYYY-MM-DD HH:mm:ss.SSS] ..."
 * @param {string} line -
 * @return {number} ms since epoch
 */
function lineTime(line) {
  const m = line.match(/^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3})\]/);
  return logTime(m ? `${m[1]},${m[2]}` : line);
}

/**
 * Wait for a line matching re in the output after char offset `from`
 * @param {Object} m - master handle
 * @param {RegExp} re - (no 'g' flag)
 * @param {number} from - offset in m.output
 * @param {number} [timeout] -
 * @return {Promise<string>} the line
 */
function waitLineAfter(m, re, from, timeout = 10000) {
  return m.waitFor(h => h.output.slice(from).split('\n').find(line => re.test(line)), timeout);
}

/**
 * Wait for a message `action` received after index `from` of m.messages
 * @param {Object} m - master handle
 * @param {string} action -
 * @param {Function} [where] - (msg) => boolean
 * @param {number} [from] -
 * @param {number} [timeout] -
 * @return {Promise<Object>} the message
 */
function waitMessage(m, action, where, from = 0, timeout = 10000) {
  return m.waitFor(h => h.messages.slice(from).find(msg => msg && msg.action === action && (!where || where(msg))), timeout);
}

let echoSeq = 0;

/**
 * parent -> master -> worker -> master -> parent
 * @param {Object} m - master handle
 * @param {string} role - 'app' | 'agent'
 * @param {number} pid - the worker (for an app worker: receiverPid)
 * @param {number} [timeout] -
 * @return {Promise<Object>} the reply's data
 */
async function echo(m, role, pid, timeout = 10000) {
  const id = `${process.pid}-${++echoSeq}`;
  const msg = { action: 'echo', to: role, data: { id } };
  if (role === 'app') msg.receiverPid = String(pid);
  m.send(msg);
  const reply = await waitMessage(m, 'echo-reply', r => r.data.id === id, 0, timeout)
    .catch(err => {
      err.message = `echo to ${role} ${pid}: ${err.message}`;
      throw err;
    });
  assert.strictEqual(reply.data.pid, pid, `echo to ${role} ${pid} answered by ${reply.data.pid}`);
  return reply.data;
}

/** /proc/<pid>/status fields in bytes (VmRSS, VmHWM, ...) */
function memoryOf(pid) {
  const out = {};
  for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
    const match = line.match(/^(Vm\w+):\s+(\d+) kB$/);
    if (match) out[match[1]] = Number(match[2]) * 1024;
  }
  return out;
}

/**
 * A client that sends GET /pid on a new connection, one request at a time,
 * until stopped, and records every outcome. `inject(path)` runs a request of
 * its own between two of them (so it never overlaps one).
 */
class Hammer extends EventEmitter {
  constructor(port) {
    super();
    this.setMaxListeners(100);
    this.port = port;
    this.results = [];
    this.queue = [];
    this.stopped = false;
    this.done = this.run();
  }

  async run() {
    while (!this.stopped) {
      const job = this.queue.shift();
      const urlPath = job ? job.path : '/pid';
      const t = Date.now();
      let result;
      try {
        const res = await get(this.port, urlPath, { timeout: 10000 });
        result = { t, path: urlPath, status: res.status, body: res.body, pid: Number(res.body) };
      } catch (err) {
        result = { t, path: urlPath, error: err.message };
      }
      if (job) job.resolve(result);
      else this.results.push(result);
      this.emit('result');
    }
  }

  /**
   * @param {string} urlPath -
   * @return {Promise<Object>} { status, body } or { error }
   */
  inject(urlPath) {
    return new Promise(resolve => this.queue.push({ path: urlPath, resolve }));
  }

  /**
   * Wait until pred(results) is truthy
   * @param {Function} pred -
   * @param {number} [timeout] -
   * @return {Promise<*>} -
   */
  until(pred, timeout = 20000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const value = pred(this.results);
        if (value) {
          clearTimeout(timer);
          this.removeListener('result', check);
          resolve(value);
        }
      };
      const timer = setTimeout(() => {
        this.removeListener('result', check);
        reject(new Error(`hammer: timeout (${timeout}ms) waiting for ${pred.toString().slice(0, 160)}; ` +
          `last results: ${JSON.stringify(this.results.slice(-5))}`));
      }, timeout);
      this.on('result', check);
      check();
    });
  }

  /** @return {Promise<void>} after the request in flight */
  async stop() {
    this.stopped = true;
    await this.done;
  }

  failures() {
    return this.results.filter(r => r.error || r.status !== 200);
  }

  assertAllOk(m) {
    const bad = this.failures();
    assert.deepStrictEqual(bad, [], `${bad.length} of ${this.results.length} requests failed\n${m ? m.tail(40) : ''}`);
  }
}

describe('faults', () => {
  const hammers = [];
  const stopped = []; // pids a test SIGSTOPped
  function hammer(port) {
    const h = new Hammer(port);
    hammers.push(h);
    return h;
  }
  afterEach(async () => {
    for (const pid of stopped.splice(0)) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch (_) {
        // gone
      }
    }
    await Promise.all(hammers.splice(0).map(h => h.stop()));
  });

  async function stop(m) {
    assert(!m.exited, `master exited\n${m.tail()}`);
    m.kill('SIGTERM');
    const exit = await m.waitExit(20000);
    assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
  }

  it('prod: an app worker dying after ready is replaced (died/cfork lines, app-worker-died, egg-pids, egg-ready), HTTP keeps answering', async () => {
    const m = await startMaster('faults', {}, { env: PROD });
    const port = m.options.port;
    await m.waitReady();
    const apps = sorted(m.workers().app);
    const [ agent ] = m.workers().agent;
    assert.strictEqual(apps.length, 2);

    const h = hammer(port);
    await h.until(r => r.length >= 5);
    const mark = m.messages.length;
    const die = await h.inject('/die?code=1');
    assert.strictEqual(die.status, 200, JSON.stringify(die));
    const victim = die.pid;
    assert(apps.includes(victim), `/die answered by ${victim}, not one of ${apps}`);
    const survivor = apps.find(pid => pid !== victim);

    const died = await m.waitFor(appDiedLine(m, victim, { code: 1 }), 10000);
    // (egg-cluster lists the workers it knows, the dead one included; a replacement may be there already)
    const current = JSON.parse(died[2]);
    assert(current.includes(victim) && current.includes(survivor), `current workers: ${died[2]}`);
    // service goes on while the victim is dead
    const afterDeath = h.results.length;
    await h.until(r => r.length >= afterDeath + 3);

    // cfork's console lines (stderr: console.error, the worker may be reforked).
    // egg-cluster prints the disconnect line when Node sees the channel close
    // before the exit; when it sees the exit first it prints only the exit line.
    const disconnectRe = cforkLine(m, `worker:${victim} disconnect \\(exitedAfterDisconnect: false, state: disconnected, ` +
      'isDead: (true|false), worker\\.disableRefork: false\\)');
    const exitFirstRe = cforkLine(m, `worker:${victim} exit \\(code: 1, exitedAfterDisconnect: false, state: dead, ` +
      'isDead: true, isExpected: false, worker\\.disableRefork: false\\)');
    await m.waitFor(h2 => disconnectRe.test(h2.stderr) || (REFERENCE && exitFirstRe.test(h2.stderr)), 10000);
    const forked = await m.waitFor(cforkLine(m, 'new worker:(\\d+) fork \\(state: none\\)'), 10000);
    const replacement = Number(forked[1]);
    assert(!apps.includes(replacement), `new worker ${replacement}`);
    assert.match(m.stderr, cforkLine(m, `new worker:${replacement} fork \\(state: none\\)`));

    const diedMsg = await waitMessage(m, 'app-worker-died', null, mark);
    assert.deepStrictEqual(diedMsg, { action: 'app-worker-died', to: 'parent', from: 'master' });

    // the replacement is the third cluster worker, and listens on the port
    await m.waitFor(masterLine(m, `app_worker#3:${replacement} started at ${port}, remain 0 \\(\\d+ms\\)`), 30000);
    // the agent learns the new set of listening workers
    const pidsMsg = await waitMessage(m, 'agent-egg-pids',
      msg => msg.data.pid === agent && String(sorted(msg.data.data)) === String(sorted([ survivor, replacement ])), mark, 10000);
    assert(pidsMsg);
    for (const msg of m.messages.slice(mark).filter(msg => msg.action === 'agent-egg-pids')) {
      assert(!msg.data.data.includes(victim), `egg-pids after the death names the dead worker: ${JSON.stringify(msg)}`);
    }
    // the new worker gets egg-ready
    await waitMessage(m, 'app-egg-ready', msg => msg.data.pid === replacement, mark, 10000);

    // and serves
    await h.until(r => r.slice(afterDeath).some(x => x.pid === replacement));
    await h.stop();
    h.assertAllOk(m);
    assert(h.results.slice(afterDeath).every(x => x.pid === survivor || x.pid === replacement),
      `answered by: ${[ ...new Set(h.results.slice(afterDeath).map(x => x.pid)) ]}`);
    assert(!isAlive(victim));
    assert.deepStrictEqual(sorted(m.workers().app), sorted([ survivor, replacement ]));
    await stop(m);
  });

  it('local env: an app worker dying after ready is not replaced (refork: false); the survivor serves, the master stays up', async () => {
    const m = await startMaster('faults', {}, { env: LOCAL });
    const port = m.options.port;
    await m.waitReady();
    const apps = sorted(m.workers().app);
    assert.strictEqual(apps.length, 2);

    const h = hammer(port);
    await h.until(r => r.length >= 5);
    const mark = m.messages.length;
    const die = await h.inject('/die?code=1');
    assert.strictEqual(die.status, 200, JSON.stringify(die));
    const victim = die.pid;
    const survivor = apps.find(pid => pid !== victim);
    const afterDeath = h.results.length;

    await m.waitFor(appDiedLine(m, victim, { code: 1 }), 10000);
    // the refork decision
    await m.waitFor(h2 => cforkLine(m, 'don\'t fork new work \\(refork: false\\)').test(h2.stderr), 10000);
    const diedMsg = await waitMessage(m, 'app-worker-died', null, mark);
    assert.deepStrictEqual(diedMsg, { action: 'app-worker-died', to: 'parent', from: 'master' });

    // after the decision: a round trip through the master, and more requests
    await echo(m, 'app', survivor);
    await h.until(r => r.length >= afterDeath + 20);
    await h.stop();
    h.assertAllOk(m);
    assert(h.results.slice(afterDeath).every(x => x.pid === survivor),
      `answered by: ${[ ...new Set(h.results.slice(afterDeath).map(x => x.pid)) ]}`);

    assert(!m.exited, m.tail());
    assert.doesNotMatch(m.output, /\[cfork:master:\d+\] new worker:\d+ fork/, m.tail());
    assert.doesNotMatch(m.output, /\[master\] app_worker#3:/, m.tail());
    assert.deepStrictEqual(m.workers().app, [ survivor ]);
    assert(!isAlive(victim));
    await stop(m);
  });

  it('refork limit: after LIMIT quick deaths, "worker died too fast", then reforks with a doubling backoff until one stays up', async function() {
    // EGG_CLUSTER_RS_REFORK_LIMIT / _DURATION are ours (cfork's `limit`/`duration`), as is the backoff
    if (REFERENCE) this.skip();
    const LIMIT = 3;
    const baseDir = copyFixture('faults');
    const flag = path.join(baseDir, 'crash-on-start');
    const m = await startMaster('faults', { require: [ path.join(baseDir, 'crash-hook.js') ] }, {
      baseDir,
      env: { ...PROD, EGG_CLUSTER_RS_REFORK_LIMIT: LIMIT, EGG_CLUSTER_RS_REFORK_DURATION: 60000 },
    });
    const port = m.options.port;
    await m.waitReady();
    const apps = sorted(m.workers().app);
    assert.strictEqual(apps.length, 2);

    const h = hammer(port);
    await h.until(r => r.length >= 5);
    fs.writeFileSync(flag, ''); // from now on every new app worker exits 1 as it starts
    const die = await h.inject('/die?code=1');
    assert.strictEqual(die.status, 200, JSON.stringify(die));
    const victim = die.pid;
    const survivor = apps.find(pid => pid !== victim);

    // cfork's limit: the LIMIT-th death within DURATION is refused an immediate
    // refork; from then on each refork waits, the delay announced
    const limitRe = /worker died too fast \(total \d+ disconnect, \d+ unexpected exit\)/;
    const backoffRe = /\[master\] .*refork.*in (\d+)ms/;
    const backoffs = await m.waitFor(h2 => {
      const found = h2.output.split('\n').filter(line => backoffRe.test(line));
      return limitRe.test(h2.output) && found.length >= 3 && found;
    }, 20000);
    fs.rmSync(flag); // the next one starts normally
    let lines = m.output.split('\n');
    const limitIdx = lines.findIndex(line => limitRe.test(line));
    const firstBackoff = lines.indexOf(backoffs[0]);
    const forkRe = new RegExp(`\\[cfork:master:${m.pid}\\] new worker:(\\d+) fork`);
    // the first delay is for the death that hit the limit (whichever line comes first)
    const between = lines.slice(Math.min(limitIdx, firstBackoff), Math.max(limitIdx, firstBackoff));
    assert(!between.some(line => forkRe.test(line)), `a fork between the limit line and the first backoff line\n${m.tail(80)}`);
    const quick = lines.slice(0, Math.min(limitIdx, firstBackoff)).filter(line => forkRe.test(line)).length;
    // (cfork's allow(): with limit L the L-th death hits it, after L-1 reforks; L reforks tolerated)
    assert(quick >= LIMIT - 1 && quick <= LIMIT, `${quick} reforks before the limit line (limit ${LIMIT})\n${m.tail(80)}`);

    const delays = backoffs.slice(0, 3).map(line => Number(line.match(backoffRe)[1]));
    assert(delays[0] >= 50 && delays[0] <= 200, `first backoff ${delays[0]}ms, expected ~100ms`);
    for (let i = 1; i < delays.length; i++) {
      assert(delays[i] >= delays[i - 1] * 1.5 && delays[i] <= delays[i - 1] * 2.5,
        `backoff delays ${delays.join(', ')}: not doubling`);
    }
    // each delay is waited for: the next fork comes no earlier
    const spawnRe = new RegExp(`\\[cfork:master:${m.pid}\\] new worker:\\d+ fork|\\[master\\] app_worker#\\d+:\\d+ start, state:`);
    for (let i = 0; i < 2; i++) {
      const at = lines.indexOf(backoffs[i]);
      const next = lines.slice(at + 1).find(line => spawnRe.test(line));
      assert(next, `no fork after "${backoffs[i]}"\n${m.tail(60)}`);
      const waited = lineTime(next) - lineTime(backoffs[i]);
      assert(waited >= delays[i] - 30, `forked ${waited}ms after "${backoffs[i]}"`);
    }

    // once the crashing stops, a replacement listens and stays
    const started = await m.waitFor(h2 => {
      const re = new RegExp(`\\[master\\] app_worker#\\d+:(\\d+) started at ${port}, `, 'g');
      for (const match of h2.output.matchAll(re)) {
        if (!apps.includes(Number(match[1]))) return Number(match[1]);
      }
      return null;
    }, 30000);
    const replacement = started;
    const from = h.results.length;
    await h.until(r => r.slice(from).some(x => x.pid === replacement) && r.slice(from).some(x => x.pid === survivor));
    await h.stop();
    h.assertAllOk(m);
    assert(isAlive(replacement), 'the replacement stays up');
    assert.deepStrictEqual(sorted(m.workers().app), sorted([ survivor, replacement ]));
    await stop(m);
  });

  it('prod: the agent SIGKILLed after ready is restarted after 1s; apps and the new agent are told', async () => {
    const m = await startMaster('faults', {}, { env: PROD });
    const port = m.options.port;
    await m.waitReady();
    const apps = sorted(m.workers().app);
    const [ agent ] = m.workers().agent;
    assert.strictEqual(apps.length, 2);
    assert(agent);

    const h = hammer(port);
    await h.until(r => r.length >= 5);
    const mark = m.messages.length;
    const from = m.output.length;
    process.kill(agent, 'SIGKILL');

    const died = await m.waitFor(new RegExp(`${TS}ERROR ${m.pid} nodejs\\.AgentWorkerDiedError: ` +
      `\\[master\\] agent_worker#1:${agent} died \\(code: null, signal: SIGKILL\\)$`, 'm'), 10000);
    assert(m.stderr.includes(died[0]), 'the died line is on stderr');
    await m.waitFor(masterLine(m, 'try to start a new agent_worker after 1s \\.\\.\\.'), 5000);
    const diedMsg = await waitMessage(m, 'agent-worker-died', null, mark);
    assert.deepStrictEqual(diedMsg, { action: 'agent-worker-died', to: 'parent', from: 'master' });
    // the apps are told there is no agent
    for (const pid of apps) {
      await waitMessage(m, 'app-egg-pids', msg => msg.data.pid === pid && msg.data.data.length === 0, mark);
    }

    const starting = await waitLineAfter(m, masterLine(m, 'new agent_worker starting\\.\\.\\.'), from, 10000);
    const delay = lineTime(starting) - lineTime(died[0]);
    assert(delay >= 900 && delay < 3000, `new agent ${delay}ms after the death, expected 1s`);
    const start = await m.waitFor(masterLine(m, 'agent_worker#2:(\\d+) start with clusterPort:\\d+'), 10000);
    const agent2 = Number(start[1]);
    assert.notStrictEqual(agent2, agent);
    await m.waitFor(masterLine(m, `agent_worker#2:${agent2} started \\(\\d+ms\\)`), 30000);

    // every app: agent-start again, egg-pids with the new agent
    for (const pid of apps) {
      await waitMessage(m, 'app-agent-start', msg => msg.data.pid === pid, mark);
      await waitMessage(m, 'app-egg-pids', msg => msg.data.pid === pid && String(msg.data.data) === String([ agent2 ]), mark);
    }
    // the new agent: egg-pids with the app workers, egg-ready
    await waitMessage(m, 'agent-egg-pids', msg => msg.data.pid === agent2 && String(sorted(msg.data.data)) === String(apps), mark);
    await waitMessage(m, 'agent-egg-ready', msg => msg.data.pid === agent2, mark);
    assert.deepStrictEqual(m.workers().agent, [ agent2 ]);
    await echo(m, 'agent', agent2);

    const n = h.results.length;
    await h.until(r => r.length >= n + 5);
    await h.stop();
    h.assertAllOk(m);
    await stop(m);
  });

  it('before ready: an app worker hitting egg\'s start timeout (workerStartTimeout) exits the master with 1', async () => {
    const m = await startMaster('start-timeout', {}, { env: PROD });
    const exit = await m.waitExit(30000);
    assert.deepStrictEqual(exit, { code: 1, signal: null }, m.tail());
    const timeoutRe = new RegExp(`${TS}ERROR (\\d+) \\[app_worker\\] start timeout, exiting with code:1$`, 'm');
    const timedOut = m.stderr.match(timeoutRe);
    assert(timedOut, m.tail());
    const pid = timedOut[1];
    // the worker did start booting (willReady was called) and waited egg's 1000ms
    assert(m.messages.some(msg => msg.action === 'app-will-ready'), m.tail());
    const lines = m.output.split('\n');
    const forkLine = lines.find(line => masterLine(m, `app_worker#\\d+:${pid} start, state: \\w+, current workers: .*`).test(line));
    assert(forkLine, m.tail());
    const waited = lineTime(lines.find(line => timeoutRe.test(line))) - lineTime(forkLine);
    assert(waited >= 900, `start timeout ${waited}ms after the fork`);
    assert.match(m.stderr, masterLine(m, 'app_worker#\\d+:\\d+ start fail, exiting with code:1', 'ERROR'), m.tail());
    assert.match(m.stderr, masterLine(m, 'exit with code:1', 'ERROR'), m.tail());
    assert(!m.messages.some(msg => msg.action === 'egg-ready'));
    await waitDead(findProcesses(m.baseDir).map(p => p.pid), 10000);
    assert.deepStrictEqual(findProcesses(m.baseDir), []);
  });

  it('health check: an agent that cannot come back -> ClusterWorkerExceptionError, exit 1 (EGG_CLUSTER_RS_HEALTH_INTERVAL)', async function() {
    // egg-cluster checks every 10s (no variable): 30s+ in reference mode
    if (REFERENCE) this.skip();
    const INTERVAL = 200;
    const m = await startMaster('faults', {}, { env: { ...PROD, EGG_CLUSTER_RS_HEALTH_INTERVAL: INTERVAL } });
    await m.waitReady();
    const [ agent ] = m.workers().agent;
    const apps = m.workers().app;
    assert.strictEqual(apps.length, 2);
    // a healthy cluster is left alone: several intervals pass (the echo round trips take time) ...
    const t0 = Date.now();
    while (Date.now() - t0 < INTERVAL * 5) await echo(m, 'agent', agent);
    assert(!m.exited, m.tail());
    assert.doesNotMatch(m.output, /ClusterWorkerExceptionError/);

    // ... then every new agent dies at boot
    fs.writeFileSync(path.join(m.baseDir, 'agent-crash-on-boot'), '');
    process.kill(agent, 'SIGKILL');
    const exit = await m.waitExit(20000);
    assert.deepStrictEqual(exit, { code: 1, signal: null }, m.tail());
    const errRe = new RegExp(`${TS}ERROR ${m.pid} nodejs\\.ClusterWorkerExceptionError: ` +
      '\\[master\\] 0 agent and 2 worker\\(s\\) alive, exit to avoid unknown state$', 'm');
    assert.match(m.stderr, errRe, m.tail());
    assert.match(m.stderr, masterLine(m, 'exit with code:1', 'ERROR'), m.tail());
    // three checks in a row: at least two intervals after the death, far less than 10s
    const lines = m.output.split('\n');
    const diedLine = lines.find(line => new RegExp(`AgentWorkerDiedError: \\[master\\] agent_worker#1:${agent} died`).test(line));
    const errLine = lines.find(line => errRe.test(line));
    assert(diedLine, m.tail());
    const after = lineTime(errLine) - lineTime(diedLine);
    assert(after >= 2 * INTERVAL - 50 && after < 5000, `exception ${after}ms after the agent died (interval ${INTERVAL}ms)`);
    await waitDead(findProcesses(m.baseDir).map(p => p.pid), 10000);
  });

  it('SIGTERM while the agent is still booting: the close lines, exit 0, nothing left', async () => {
    const m = await startMaster('faults', {}, { env: { ...PROD, FAULTS_AGENT_HANG_BOOT: 1, EGG_MASTER_CLOSE_TIMEOUT: 3000 } });
    const booting = await m.waitFor('agent-booting', 30000);
    const agent = booting.data.pid;
    assert(isAlive(agent));
    m.kill('SIGTERM');
    const exit = await m.waitExit(20000);
    assert.deepStrictEqual(exit, { code: 0, signal: null }, m.tail());
    const lines = m.output.split('\n');
    let from = 0;
    for (const re of [
      masterLine(m, 'master is killed by signal SIGTERM, closing'),
      masterLine(m, 'system memory: total \\d+, free \\d+'),
      masterLine(m, 'process info: heap_limit \\d+, heap_used \\d+'),
      masterLine(m, 'send kill SIGTERM to app workers, will exit with code:0 after 3000ms'),
      masterLine(m, 'wait 3000ms'),
      masterLine(m, 'send kill SIGTERM to agent worker, will exit with code:0 after 3000ms'),
      masterLine(m, 'wait 3000ms'),
      masterLine(m, 'close done, exiting with code:0'),
      masterLine(m, 'exit with code:0'),
    ]) {
      const i = lines.findIndex((line, idx) => idx >= from && re.test(line));
      assert(i >= 0, `${re} not found after line ${from}\n${m.tail(60)}`);
      from = i + 1;
    }
    assert(!m.messages.some(msg => msg.action === 'egg-ready'));
    assert.doesNotMatch(m.output, /app_worker#\d+:\d+ start/, 'no app worker was forked');
    await waitDead([ agent ], 5000);
    assert.deepStrictEqual(findProcesses(m.baseDir), []);
  });

  it('bad input from a child never takes the master down', async function() {
    // egg-cluster dies on some of these (see docs/differences.md)
    if (REFERENCE) this.skip();
    const CLOSE_TIMEOUT = 2000;
    const m = await startMaster('faults', {}, { env: { ...PROD, EGG_APP_CLOSE_TIMEOUT: CLOSE_TIMEOUT } });
    const port = m.options.port;
    await m.waitReady();
    const apps = sorted(m.workers().app);
    const [ agent ] = m.workers().agent;
    const [ bad, good ] = apps;
    const h = hammer(port);
    await h.until(r => r.length >= 5);

    const who = { app: bad, agent };
    // soft failures (the later cases still run; all are reported at the end)
    const problems = [];
    const nameRe = {
      app: pid => new RegExp(`${TS}(?:INFO|WARN|ERROR) ${m.pid} .*app_worker#\\d+:${pid}\\b`),
      agent: pid => new RegExp(`${TS}(?:INFO|WARN|ERROR) ${m.pid} .*agent_worker#\\d+:${pid}\\b`),
    };

    /**
     * One case: the child writes it, then its next message arrives, the master
     * logged a line naming it, and both directions still work
     * @param {string} role -
     * @param {string} name - fixtures/apps/faults/lib/raw.js case
     * @param {Object} [opts] - { log: false (no line expected), data: more for the child, timeout }
     * @return {Promise<number>} m.output offset before the case
     */
    async function rawCase(role, name, opts = {}) {
      const pid = who[role];
      const from = m.output.length;
      const mark = m.messages.length;
      const msg = { action: 'raw', to: role, data: { name, ...opts.data } };
      if (role === 'app') msg.receiverPid = String(pid);
      m.send(msg);
      const what = `${role} ${pid} ${name}`;
      await waitMessage(m, 'raw-done', x => x.data.pid === pid && x.data.name === name, mark, opts.timeout || 10000)
        .catch(err => {
          err.message = `${what}: ${err.message}`;
          throw err;
        });
      if (opts.log !== false) {
        // (soft: the other cases still run, all missing lines are reported at the end)
        const line = await waitLineAfter(m, nameRe[role](pid), from, 2000).catch(() => null);
        if (!line) problems.push(`${what}: no master line naming ${pid}`);
      }
      assert(!m.exited, `${what}: master exited\n${m.tail()}`);
      assert(isAlive(pid), `${what}: the child is gone`);
      await echo(m, role, pid);
      await echo(m, 'app', good);
      if (role === 'app') await echo(m, 'agent', agent);
      return from;
    }

    for (const role of [ 'app', 'agent' ]) {
      for (const name of [ 'empty', 'not-json', 'array', 'null', 'number', 'unknown-cmd' ]) {
        await rawCase(role, name);
      }
      // NODE_HANDLE without an fd: the master answers NACK, and the child's
      // queued messages (raw-done among them) flow again
      const mark = m.messages.length;
      await rawCase(role, 'handle-no-fd');
      const reply = await waitMessage(m, 'handle-reply', x => x.data.pid === who[role], mark);
      assert.strictEqual(reply.data.cmd, 'NODE_HANDLE_NACK');
    }

    // a 64 MiB line: logged once, dropped, the channel goes on
    {
      const mark = m.messages.length;
      const from = await rawCase('app', 'huge', { data: { bytes: 64 * MIB }, timeout: 30000 });
      await echo(m, 'app', bad);
      const named = m.output.slice(from).split('\n').filter(line => nameRe.app(bad).test(line));
      if (named.length > 1) problems.push(`64 MiB line: logged ${named.length} times:\n${named.join('\n').slice(0, 2000)}`);
      if (m.messages.slice(mark).some(x => x.action === 'huge')) problems.push('64 MiB line: relayed to the parent');
    }

    // a flood of small messages from the app worker to the agent; meanwhile
    // the rest works (the hammer runs; echoes through the other worker)
    {
      const COUNT = 200000;
      const mark = m.messages.length;
      const from = m.output.length;
      m.send({ action: 'raw', to: 'app', receiverPid: String(bad), data: { name: 'flood', count: COUNT } });
      await waitMessage(m, 'raw-start', x => x.data.pid === bad && x.data.name === 'flood', mark);
      const during = [];
      while (!m.messages.slice(mark).some(x => x.action === 'raw-done' && x.data.name === 'flood')) {
        const t = Date.now();
        await echo(m, 'app', good, 10000);
        during.push(Date.now() - t);
        if (during.length > 5000) break;
      }
      assert(during.length >= 1);
      const count = await waitMessage(m, 'agent-flood-count', x => x.data.pid === agent, mark, 30000);
      assert.strictEqual(count.data.expected, COUNT);
      // all of them, unless the master says it dropped some for the agent
      if (count.data.count !== COUNT && !new RegExp(`agent_worker#\\d+:${agent}\\b.*drop`, 'i').test(m.output.slice(from))) {
        problems.push(`flood: the agent got ${count.data.count} of ${COUNT} and the master did not say it dropped any`);
      }
      await echo(m, 'agent', agent);
      await echo(m, 'app', bad);
    }

    // a worker that closes its channel and stays alive: logged, replaced, killed
    {
      const mark = m.messages.length;
      const from = m.output.length;
      m.send({ action: 'close-channel', to: 'app', receiverPid: String(bad) });
      await waitMessage(m, 'channel-closing', x => x.data.pid === bad, mark);
      if (!await waitLineAfter(m, nameRe.app(bad), from, 5000).catch(() => null)) {
        problems.push(`close-channel: no master line naming ${bad}`);
      }
      const t = Date.now();
      await waitDead([ bad ], CLOSE_TIMEOUT + 2000).catch(err => {
        err.message = `the worker that closed its channel: ${err.message}\n${m.tail(30)}`;
        throw err;
      });
      const replacement = await m.waitFor(h2 => {
        const re = new RegExp(`\\[master\\] app_worker#\\d+:(\\d+) started at ${port}, `, 'g');
        for (const match of h2.output.slice(from).matchAll(re)) {
          if (!apps.includes(Number(match[1]))) return Number(match[1]);
        }
        return null;
      }, 30000);
      if (process.env.EGG_CLUSTER_RS_TEST_VERBOSE) console.log('closed-channel worker gone after %dms', Date.now() - t);
      await echo(m, 'app', replacement);
      await echo(m, 'app', good);
      const n = h.results.length;
      await h.until(r => r.slice(n).some(x => x.pid === replacement) && r.slice(n).some(x => x.pid === good));
      assert.deepStrictEqual(sorted(m.workers().app), sorted([ good, replacement ]));
    }

    await h.stop();
    h.assertAllOk(m);
    assert.deepStrictEqual(problems, [], problems.join('\n'));
    await stop(m);
  });

  it('a child that stops reading: the master drops its messages instead of growing, and the child works again after', async function() {
    if (REFERENCE) this.skip();
    const COUNT = 10000;
    const SIZE = 64 * 1024;
    const m = await startMaster('faults', {}, { env: PROD });
    const port = m.options.port;
    await m.waitReady();
    const apps = sorted(m.workers().app);
    const [ agent ] = m.workers().agent;
    const [ victim, other ] = apps;

    process.kill(victim, 'SIGSTOP');
    stopped.push(victim);
    const h = hammer(port); // (started after the stop: no request is caught inside the stopped worker)
    await h.until(r => r.length >= 5);
    const before = memoryOf(m.pid);
    const from = m.output.length;
    const mark = m.messages.length;
    m.send({ action: 'flood-big', to: 'agent', data: { target: victim, count: COUNT, size: SIZE } });

    // (flood-big-done comes after all the big messages on the agent's channel)
    await waitMessage(m, 'flood-big-done', x => x.data.pid === agent, mark, 60000);
    await waitLineAfter(m, new RegExp(`app_worker#\\d+:${victim}\\b.*(drop|not reading)`, 'i'), from, 10000);
    const after = memoryOf(m.pid);
    const grew = after.VmHWM - before.VmRSS;
    if (process.env.EGG_CLUSTER_RS_TEST_VERBOSE) console.log('master memory before %j, after %j', before, after);
    assert(grew < 300 * MIB, `master RSS ${before.VmRSS} -> peak ${after.VmHWM} (+${Math.round(grew / MIB)} MiB) ` +
      `for ${Math.round(COUNT * SIZE / MIB)} MiB sent to a stopped worker`);
    // meanwhile everything else worked
    await echo(m, 'app', other);
    await echo(m, 'agent', agent);
    assert(isAlive(victim), 'the stopped worker was killed');

    process.kill(victim, 'SIGCONT');
    const reply = await echo(m, 'app', victim, 30000);
    assert(reply.bigCount < COUNT, `the stopped worker got all ${COUNT} messages`);
    const n = h.results.length;
    await h.until(r => r.slice(n).some(x => x.pid === victim) && r.slice(n).some(x => x.pid === other), 30000);
    await h.stop();
    h.assertAllOk(m);
    assert.deepStrictEqual(sorted(m.workers().app), apps);
    await stop(m);
  });

  it('the master\'s JS thread blocked: relaying and refork decisions go on in Rust', async function() {
    this.timeout(60000);
    const m = await startMaster('faults', {}, { env: PROD });
    const port = m.options.port;
    await m.waitReady();
    assert.strictEqual((await get(port, '/roundtrip')).status, 200);

    const BLOCK = 4000;
    m.send({ action: 'runner-block-js', data: { ms: BLOCK } });
    // wait until the runner's thread is surely spinning: a message through the master's JS
    // cannot come back now, HTTP and worker <-> agent messages do not need it
    const t0 = Date.now();
    const roundtrips = [];
    for (let i = 0; i < 10; i++) {
      const started = Date.now();
      const res = await get(port, '/roundtrip');
      roundtrips.push({ status: res.status, ms: Date.now() - started, at: Date.now() });
    }
    // a worker dies while the JS thread is blocked: the Rust side replaces it
    const from = m.output.length;
    await get(port, '/die?code=1').catch(() => {});
    const forked = await m.waitFor(h => /\[cfork:master:\d+\] new worker:(\d+) fork/.exec(h.output.slice(from)), 10000);
    const forkedAt = Date.now();
    const unblocked = await m.waitFor('runner-unblocked', 20000);

    assert(unblocked.data.end - unblocked.data.start >= BLOCK - 50, JSON.stringify(unblocked));
    assert(forkedAt < t0 + BLOCK - 200, `the refork was only decided after the JS thread was free (${forkedAt - t0} ms)`);
    for (const r of roundtrips) {
      assert.strictEqual(r.status, 200, JSON.stringify(roundtrips));
      assert(r.at < t0 + BLOCK, `a round trip finished after the block: ${JSON.stringify(roundtrips)}`);
    }
    const died = /app_worker#\d+:(\d+) died \(code: 1,/.exec(m.output.slice(from));
    assert(died, m.tail());
    assert(m.workers().app.includes(Number(forked[1])), 'the replacement is alive');
    assert.notStrictEqual(Number(forked[1]), Number(died[1]));
    await stop(m);
  });

  it('a panic in the Rust master is caught, reported, and the master goes on', async () => {
    const m = await startMaster('faults', {}, { env: { ...PROD, EGG_CLUSTER_RS_FAULT_INJECTION: '1' } });
    const port = m.options.port;
    await m.waitReady();
    m.send({ action: 'egg-cluster-rs:inject-panic', to: 'master' });
    await m.waitFor(/ERROR \d+ \[master\] internal error \(a bug in egg-cluster-rs\), the event was dropped: injected fault/);
    assert.match(m.stderr, /panicked at [^]*injected fault/);
    assert(!m.exited, m.tail());
    for (let i = 0; i < 3; i++) assert.strictEqual((await get(port, '/roundtrip')).status, 200);
    await stop(m);
  });

  it('no action name a worker sends to the master throws there (error, newListener, removeListener, reload-done, Object.prototype names)', async () => {
    const m = await startMaster('faults', {}, { env: PROD });
    const port = m.options.port;
    await m.waitReady();
    const [ app ] = sorted(m.workers().app);
    const reserved = [ 'error', 'newListener', 'removeListener', 'reload-done' ];
    const others = [ '__proto__', 'constructor', 'hasOwnProperty', 'toString', 'valueOf', '_events' ];
    for (const action of [ ...reserved, ...others ]) {
      const from = m.output.length;
      m.send({ action: 'to-master', to: 'app', receiverPid: String(app), data: { action, data: 'boom' } });
      if (reserved.includes(action)) {
        const re = new RegExp(`WARN ${m.pid} \\[master\\] dropped a malformed message from app_worker#\\d+:${app} \\(\\d+ so far\\): action '${action}' is reserved`);
        await waitLineAfter(m, re, from);
      }
      await echo(m, 'app', app);
      assert(!m.exited, `${action}: master exited\n${m.tail()}`);
    }
    assert.strictEqual((await get(port, '/pid')).status, 200);
    await stop(m);
  });

  it('fds a worker sends without NODE_HANDLE are closed at once: the master\'s fd count stays bounded, a reload still works', async function() {
    if (REFERENCE) this.skip();
    const m = await startMaster('faults', {}, { env: PROD });
    const port = m.options.port;
    await m.waitReady();
    const fdCount = () => fs.readdirSync(`/proc/${m.pid}/fd`).length;
    const before = fdCount();
    const [ app ] = sorted(m.workers().app);
    const mark = m.messages.length;
    const COUNT = 250; // x 64 fds: 16,000
    m.send({ action: 'raw', to: 'app', receiverPid: String(app), data: { name: 'fds', count: COUNT } });
    await waitMessage(m, 'raw-done', x => x.data.pid === app && x.data.name === 'fds', mark, 60000);
    // the lines themselves went on to the agent; raw-done came after them on the same channel
    await echo(m, 'app', app);
    const after = fdCount();
    assert(after <= before + 16, `the master holds ${after} fds (${before} before)`);
    await m.waitFor(new RegExp(`WARN ${m.pid} \\[master\\] dropped a malformed message from app_worker#\\d+:${app} .*64 file descriptor\\(s\\) without a NODE_HANDLE line closed`));
    const mark2 = m.messages.length;
    m.kill('SIGUSR2');
    const done = await m.waitFor(h => h.messages.slice(mark2).find(msg => msg && msg.action === 'reload-done'), 60000);
    assert.strictEqual(done.data.ok, true, JSON.stringify(done.data));
    assert.strictEqual((await get(port, '/pid')).status, 200);
    await stop(m);
  });
});
