'use strict';

/**
 * Test helpers: start a cluster master as a child of the test process (so the
 * test process is the master's *parent* and gets egg-ready & co over IPC),
 * capture its output, wait for log lines / messages / exit, find and kill
 * leftovers by their unique baseDir.
 *
 * No fixed sleeps: everything waits for an event, with a deadline.
 *
 * Environment switches:
 *  - EGG_CLUSTER_RS_TEST_REFERENCE=1: run the masters of fixtures/start.js with
 *    egg-cluster 2.5's JS master (and this package's worker scripts), to check
 *    the tests themselves. Expected failures there: "ignores a second signal
 *    while closing", "EGG_AGENT_CLOSE_TIMEOUT" and connections.test.js's sticky
 *    failover (egg-cluster bugs). The
 *    egg-scripts and egg-mock tests use this package as the framework either way.
 *  - EGG_CLUSTER_RS_TEST_VERBOSE=1: echo the masters' output.
 *  - EGG_CLUSTER_RS_TEST_KEEP=1: keep the fixture copies in __test__/.tmp.
 */

const assert = require('assert');
const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');
const childProcess = require('child_process');
const EventEmitter = require('events');
const os = require('os');

const ROOT = path.join(__dirname, '..');
const FIXTURES = path.join(__dirname, 'fixtures');
const TMP = path.join(__dirname, '.tmp');
const RUNNER = path.join(FIXTURES, 'start.js');
const REFERENCE = !!process.env.EGG_CLUSTER_RS_TEST_REFERENCE;

// egg-logger console format: "2024-01-01 00:00:00,000 INFO 1234 [master] ..."
const TS = String.raw`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} `;
const LOG_PREFIX = String.raw`${TS}(?:DEBUG|INFO|WARN|ERROR) \d+ `;

let seq = 0;
const handles = new Set();
const tmpDirs = new Set();

/**
 * Copy a fixture app into a unique directory under __test__/.tmp (inside the
 * repo, so `require('egg')` & co resolve from the repo's node_modules). The
 * unique path is what the leftover scan looks for in /proc/<pid>/cmdline.
 * @param {string} name - dir under __test__/fixtures/apps
 * @return {string} the copy's absolute path
 */
function copyFixture(name) {
  const src = path.isAbsolute(name) ? name : path.join(FIXTURES, 'apps', name);
  const dest = path.join(TMP, `${path.basename(src)}-${process.pid}-${++seq}-${Math.random().toString(36).slice(2, 8)}`);
  fs.mkdirSync(TMP, { recursive: true });
  fs.cpSync(src, dest, { recursive: true });
  tmpDirs.add(dest);
  return dest;
}

// Ports the tests hand to masters and apps come from below the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range starts at 32768 by default), where no outgoing
// connection of a load client and no master's own bind(0) can take them between the check and
// the bind; mocha runs two files at a time, so each port is also reserved across processes by
// an O_EXCL file, kept while this process lives (a file older than an hour is a dead run's).
const PORTS_LOW = 20000;
const PORTS_HIGH = 32767;
const PORTS_DIR = path.join(os.tmpdir(), 'egg-cluster-rs-test-ports');
const reserved = new Set();

/** @return {boolean} `port` is now this process's, for the whole run */
function reservePort(port) {
  if (reserved.has(port)) return false;
  const file = path.join(PORTS_DIR, String(port));
  try {
    fs.mkdirSync(PORTS_DIR, { recursive: true });
    fs.closeSync(fs.openSync(file, 'wx'));
  } catch (e) {
    if (e.code !== 'EEXIST') throw e;
    try {
      if (Date.now() - fs.statSync(file).mtimeMs < 3600000) return false;
      fs.utimesSync(file, new Date(), new Date());
    } catch (_) {
      return false;
    }
  }
  if (reserved.size === 0) {
    process.once('exit', () => {
      for (const p of reserved) fs.rmSync(path.join(PORTS_DIR, String(p)), { force: true });
    });
  }
  reserved.add(port);
  return true;
}

/** @return {Promise<boolean>} nothing listens on `port` (any address) right now */
function canListen(port) {
  return new Promise(resolve => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, () => server.close(() => resolve(true)));
  });
}

/** @return {Promise<number>} a port that was free a moment ago, which no other test gets */
async function getFreePort() {
  for (let i = 0; i < 1000; i++) {
    const port = PORTS_LOW + Math.floor(Math.random() * (PORTS_HIGH - PORTS_LOW + 1));
    if (reservePort(port) && await canListen(port)) return port;
  }
  throw new Error(`no free port in ${PORTS_LOW}-${PORTS_HIGH} after 1000 tries`);
}

/**
 * The environment for a master: the test's own, minus what would change egg's
 * or the logger's behaviour, plus `env`.
 * @param {Object} env - extra variables (a value of undefined deletes)
 * @param {string} home - HOME for the cluster (egg logs to $HOME/logs in prod)
 * @return {Object} env
 */
function makeEnv(env, home) {
  const out = { ...process.env };
  for (const key of Object.keys(out)) {
    if (key.startsWith('EGG_CLUSTER_RS_TEST_')) continue;
    if (/^(EGG_|NODE_ENV$|FORCE_COLOR$|NO_COLOR$|NODE_OPTIONS$|NODE_UNIQUE_ID$|DEBUG$)/.test(key)) delete out[key];
  }
  out.HOME = home;
  for (const [ key, value ] of Object.entries(env || {})) {
    if (value === undefined) delete out[key];
    else out[key] = String(value);
  }
  return out;
}

class MasterHandle extends EventEmitter {
  constructor({ baseDir, options, env, script, args, execArgv, cwd, ipc = true }) {
    super();
    this.setMaxListeners(100);
    this.baseDir = baseDir;
    this.options = options;
    this.stdout = '';
    this.stderr = '';
    this.output = ''; // stdout and stderr interleaved as received
    this.messages = [];
    this.exited = false;
    this.closed = false;
    this.exitCode = null;
    this.signalCode = null;
    this.startedAt = Date.now();

    const argv = args || [ JSON.stringify(options) ];
    this.child = ipc
      ? childProcess.fork(script || RUNNER, argv, {
        cwd: cwd || ROOT,
        env,
        execArgv: execArgv || [],
        stdio: [ 'ignore', 'pipe', 'pipe', 'ipc' ],
      })
      // as egg-scripts --daemon starts a master once it has let it go: no IPC parent, its own
      // session (no controlling terminal)
      : childProcess.spawn(process.execPath, [ ...(execArgv || []), script || RUNNER, ...argv ], {
        cwd: cwd || ROOT,
        env,
        detached: true,
        stdio: [ 'ignore', 'pipe', 'pipe' ],
      });
    this.pid = this.child.pid;
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', chunk => {
      this.stdout += chunk;
      this.output += chunk;
      if (process.env.EGG_CLUSTER_RS_TEST_VERBOSE) process.stdout.write(chunk);
      this.emit('update');
    });
    this.child.stderr.on('data', chunk => {
      this.stderr += chunk;
      this.output += chunk;
      if (process.env.EGG_CLUSTER_RS_TEST_VERBOSE) process.stderr.write(chunk);
      this.emit('update');
    });
    this.child.on('message', msg => {
      this.messages.push(msg);
      this.emit('update');
    });
    this.child.on('error', err => {
      this.error = err;
      this.emit('update');
    });
    this.child.once('exit', (code, signal) => {
      this.exited = true;
      this.exitCode = code;
      this.signalCode = signal;
      this.exitedAt = Date.now();
      this.emit('update');
    });
    this.child.once('close', () => {
      this.closed = true;
      this.emit('update');
    });
    handles.add(this);
  }

  /**
   * Wait until `cond` holds. `cond` is
   *  - a function (handle) => value: resolves with the first truthy value;
   *  - a RegExp: matched against stdout+stderr, resolves with the match;
   *  - a string: resolves with the first message whose action is that string;
   *  - { action, where?(msg) }: same, with an extra predicate.
   * Rejects after `timeout` ms, or as soon as the master has exited and closed
   * its output without `cond` holding (unless `cond` is about exiting).
   * @param {Function|RegExp|string|Object} cond -
   * @param {number} [timeout] -
   * @return {Promise<*>} -
   */
  waitFor(cond, timeout = 30000) {
    const check = toCheck(cond);
    return new Promise((resolve, reject) => {
      let timer;
      const done = (err, value) => {
        clearTimeout(timer);
        this.removeListener('update', onUpdate);
        if (err) reject(err);
        else resolve(value);
      };
      const onUpdate = () => {
        let value;
        try {
          value = check(this);
        } catch (err) {
          return done(err);
        }
        if (value) return done(null, value);
        if (this.closed) {
          done(new Error(`master exited (code: ${this.exitCode}, signal: ${this.signalCode}) before ${describe(cond)}\n${this.tail()}`));
        }
      };
      timer = setTimeout(() => {
        done(new Error(`timeout (${timeout}ms) waiting for ${describe(cond)}\n${this.tail()}`));
      }, timeout);
      this.on('update', onUpdate);
      onUpdate();
    });
  }

  /**
   * Resolves with every message of `action` once `count` of them arrived
   * @param {string} action -
   * @param {number} count -
   * @param {Function} [where] - extra filter
   * @param {number} [timeout] -
   * @return {Promise<Object[]>} the messages
   */
  waitForMessages(action, count, where, timeout) {
    return this.waitFor(h => {
      const list = h.messages.filter(m => m && m.action === action && (!where || where(m)));
      return list.length >= count && list;
    }, timeout);
  }

  /** @return {Promise<Object>} egg-ready's data (after the master says so) */
  async waitReady(timeout = 60000) {
    const msg = await this.waitFor('egg-ready', timeout);
    // The master logs "egg started on ..." just before it sends egg-ready, but on another
    // channel (its stdout pipe, not the IPC socket): this process may read the message first
    // (threads.test.js's sticky test once found no "with STICKY MODE!" on Node 22). Tests read
    // the output right after, so the line is waited for too; bounded, for a master whose INFO
    // lines are hidden.
    await this.waitFor(h => / egg started on /.test(h.output) || h.closed, 5000).catch(() => {});
    return msg.data;
  }

  /**
   * Wait for the master's exit and for its output to be closed (bounded: output
   * may be held open by a leftover that inherited it).
   * @param {number} [timeout] -
   * @return {Promise<{code: number, signal: string}>} -
   */
  async waitExit(timeout = 30000) {
    await this.waitFor(h => h.exited || h.closed, timeout);
    try {
      await this.waitFor(h => h.closed, 3000);
    } catch (_) {
      // something still holds stdout/stderr; the exit itself is known
    }
    return { code: this.exitCode, signal: this.signalCode };
  }

  kill(signal = 'SIGTERM') {
    try {
      process.kill(this.pid, signal);
    } catch (_) {
      // already gone
    }
  }

  send(msg) {
    this.child.send(msg);
  }

  /** @return {number[]} pids of live processes (not the master) whose cmdline names this baseDir */
  children() {
    return findProcesses(this.baseDir).filter(p => p.pid !== this.pid).map(p => p.pid);
  }

  /** @return {Promise<Object>} the master's status snapshot, asked for with a `cluster-status` message */
  async clusterStatus() {
    const answers = h => h.messages.filter(msg => msg && msg.action === 'cluster-status');
    const n = answers(this).length;
    this.send({ to: 'master', action: 'cluster-status' });
    return (await this.waitFor(h => answers(h).length > n && answers(h)[n])).data;
  }

  /** @return {Object} {agent: pid[], app: pid[]} live workers of this master, by cmdline */
  workers() {
    const procs = findProcesses(this.baseDir).filter(p => p.pid !== this.pid);
    return {
      agent: procs.filter(p => p.cmdline.includes('agent_worker.js')).map(p => p.pid),
      app: procs.filter(p => p.cmdline.includes('app_worker.js')).map(p => p.pid),
    };
  }

  /** @return {string[]} output lines matching re */
  lines(re) {
    return this.output.split('\n').filter(line => re.test(line));
  }

  tail(n = 60) {
    const msgs = this.messages.slice(-20).map(m => JSON.stringify(m)).join('\n');
    return `--- output (last ${n} lines) ---\n${this.output.split('\n').slice(-n).join('\n')}\n--- messages ---\n${msgs}\n---`;
  }

  async cleanup() {
    if (!this.exited) {
      this.kill('SIGKILL');
      await this.waitFor(h => h.exited, 5000).catch(() => {});
    }
    await killAll(this.baseDir);
    handles.delete(this);
  }
}

function describe(cond) {
  if (typeof cond === 'string') return `message ${cond}`;
  if (cond instanceof RegExp) return `output ${cond}`;
  if (typeof cond === 'function') return `condition ${cond.toString().slice(0, 120)}`;
  return `message ${JSON.stringify(cond.action)}`;
}

function toCheck(cond) {
  if (typeof cond === 'function') return cond;
  if (cond instanceof RegExp) return h => h.output.match(cond);
  if (typeof cond === 'string') return h => h.messages.find(m => m && m.action === cond);
  if (cond && cond.action) return h => h.messages.find(m => m && m.action === cond.action && (!cond.where || cond.where(m)));
  throw new TypeError('bad condition');
}

/**
 * Start a master on a copy of a fixture app.
 * @param {string} fixture - name under fixtures/apps (or an absolute dir, copied too)
 * @param {Object} [opts] - cluster options (baseDir is set; port: a free one unless given; workers: 2 unless given)
 * @param {Object} [more] - { env, home, baseDir (use this dir as is, no copy), execArgv (the master's),
 *   ipc (false: no IPC parent, own session, as egg-scripts --daemon leaves a master) }
 * @return {Promise<MasterHandle>} -
 */
async function startMaster(fixture, opts = {}, more = {}) {
  const baseDir = more.baseDir || copyFixture(fixture);
  const options = { baseDir, workers: 2, ...opts };
  if (!('port' in opts)) options.port = await getFreePort();
  if (options.port === undefined) delete options.port;
  const env = makeEnv(more.env, more.home || baseDir);
  return new MasterHandle({ baseDir, options, env, execArgv: more.execArgv, ipc: more.ipc });
}

/**
 * Run any node script as a tracked child (e.g. egg-scripts); marker is what
 * the leftover scan looks for.
 * @param {string} script -
 * @param {string[]} args -
 * @param {Object} more - { env, home, marker, cwd, execArgv }
 * @return {MasterHandle} -
 */
function runScript(script, args, more = {}) {
  const env = makeEnv(more.env, more.home || more.marker);
  return new MasterHandle({ baseDir: more.marker, options: null, env, script, args, execArgv: more.execArgv, cwd: more.cwd });
}

/**
 * Processes whose /proc/<pid>/cmdline contains `marker` (zombies excluded)
 * @param {string} marker -
 * @return {Array<{pid: number, cmdline: string}>} -
 */
function findProcesses(marker) {
  const out = [];
  if (!marker) return out;
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid === process.pid) continue;
    let cmdline;
    try {
      cmdline = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ');
    } catch (_) {
      continue;
    }
    if (cmdline.includes(marker) && isAlive(pid)) out.push({ pid, cmdline });
  }
  return out;
}

/**
 * @param {string} path - a /proc stat file
 * @return {boolean} it exists and its task is not a zombie
 */
function taskRuns(path) {
  let stat;
  try {
    stat = fs.readFileSync(path, 'utf8');
  } catch (_) {
    return false;
  }
  // "pid (comm) S ..." - comm may contain spaces and parens
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state !== 'Z' && state !== 'X' && state !== 'x';
}

/**
 * A process is dead once every one of its threads is. A SIGKILLed Node process's main thread
 * can be a zombie while its other threads still exit: they share its file table, so its
 * sockets (a listening port) are still open until the last one is gone.
 * @param {number} pid -
 * @return {boolean} some thread of the process still runs
 */
function isAlive(pid) {
  if (taskRuns(`/proc/${pid}/stat`)) return true;
  let tasks;
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch (_) {
    return false;
  }
  return tasks.some(tid => taskRuns(`/proc/${pid}/task/${tid}/stat`));
}

/**
 * Poll until every pid is dead.
 * @param {number[]} pids -
 * @param {number} [timeout] -
 * @return {Promise<void>} rejects naming the survivors
 */
async function waitDead(pids, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const alive = pids.filter(isAlive);
    if (!alive.length) return;
    if (Date.now() > deadline) {
      throw new Error(`still alive after ${timeout}ms: ${alive.map(pid => `${pid} ${cmdlineOf(pid)}`).join('; ')}`);
    }
    await new Promise(resolve => setTimeout(resolve, 50));
  }
}

function cmdlineOf(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').slice(0, 200);
  } catch (_) {
    return '';
  }
}

/**
 * SIGKILL every live process naming marker, and wait for them to die
 * @param {string} marker -
 * @return {Promise<number[]>} the pids that had to be killed
 */
async function killAll(marker) {
  const pids = findProcesses(marker).map(p => p.pid);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch (_) {
      // gone
    }
  }
  await waitDead(pids, 5000).catch(() => {});
  return pids;
}

const markers = new Set();

/**
 * Have afterEach SIGKILL whatever still names `marker` in its cmdline (for
 * processes not started through startMaster, e.g. egg-mock's)
 * @param {string} marker -
 * @return {string} marker
 */
function track(marker) {
  markers.add(marker);
  return marker;
}

/** kill every master started by this test and its leftovers */
async function cleanupAll() {
  await Promise.all([ ...handles ].map(h => h.cleanup()));
  await Promise.all([ ...markers ].map(m => killAll(m)));
  markers.clear();
}

/** remove the fixture copies (after the whole run) */
function removeTmp() {
  for (const dir of tmpDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch (_) {
      // ignore
    }
  }
  tmpDirs.clear();
  try {
    fs.rmdirSync(TMP);
  } catch (_) {
    // not empty (another run) or gone
  }
}

/**
 * HTTP GET on 127.0.0.1, a new connection each time
 * @param {number} port -
 * @param {string} [urlPath] -
 * @param {Object} [options] - { timeout, protocol module }
 * @return {Promise<{status: number, body: string, headers: Object}>} -
 */
function get(port, urlPath = '/', options = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: urlPath, agent: false, timeout: options.timeout || 10000 }, res => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', chunk => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode, body, headers: res.headers }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} timed out`)));
    req.on('error', reject);
  });
}

/**
 * GET /pid until `count` distinct worker pids answered (bounded)
 * @param {number} port -
 * @param {number} count -
 * @param {number} [maxRequests] -
 * @return {Promise<Set<number>>} -
 */
async function collectWorkerPids(port, count, maxRequests = 300) {
  const pids = new Set();
  for (let i = 0; i < maxRequests && pids.size < count; i++) {
    const res = await get(port, '/pid');
    assert.strictEqual(res.status, 200, `GET /pid: ${res.status} ${res.body}`);
    pids.add(Number(res.body));
  }
  return pids;
}

/**
 * index of the first line matching re in text (-1 if none)
 * @param {string} text -
 * @param {RegExp} re -
 * @return {number} -
 */
function lineIndex(text, re) {
  return text.split('\n').findIndex(line => re.test(line));
}

/**
 * The time egg-logger printed on a console line, as ms since epoch (local time)
 * @param {string} line -
 * @return {number} -
 */
function logTime(line) {
  const m = line.match(/^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d),(\d{3})/);
  assert(m, `not a log line: ${line}`);
  return new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6], +m[7]).getTime();
}

/**
 * One HTTP or HTTPS request on a new connection (for what `get` cannot do:
 * TLS, unix sockets, another host or source address)
 * @param {Object} opts - { port, host ('127.0.0.1'), path ('/'), method ('GET'),
 *   socketPath, localAddress, https (boolean), ca, rejectUnauthorized, timeout (10000) }
 * @return {Promise<{status: number, body: string, headers: Object}>} -
 */
function request(opts) {
  const mod = opts.https ? require('https') : http;
  const reqOpts = {
    method: opts.method || 'GET',
    path: opts.path || '/',
    agent: false,
    timeout: opts.timeout || 10000,
  };
  if (opts.socketPath) {
    reqOpts.socketPath = opts.socketPath;
  } else {
    reqOpts.host = opts.host || '127.0.0.1';
    reqOpts.port = opts.port;
  }
  if (opts.localAddress) reqOpts.localAddress = opts.localAddress;
  if (opts.https) {
    if (opts.ca) reqOpts.ca = opts.ca;
    if ('rejectUnauthorized' in opts) reqOpts.rejectUnauthorized = opts.rejectUnauthorized;
  }
  const what = `${reqOpts.method} ${opts.https ? 'https' : 'http'}://${opts.socketPath || `${reqOpts.host}:${reqOpts.port}`}${reqOpts.path}`;
  return new Promise((resolve, reject) => {
    const req = mod.request(reqOpts, res => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', chunk => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode, body, headers: res.headers }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${what} timed out`)));
    req.on('error', err => {
      err.message = `${what}${opts.localAddress ? ` from ${opts.localAddress}` : ''}: ${err.message}`;
      reject(err);
    });
    req.end();
  });
}

/**
 * Polls `fn` (sync or async) every 100 ms until it returns something truthy
 * @param {Function} fn -
 * @param {number} timeout - ms
 * @param {string} what - for the timeout's message
 * @return {Promise<*>} fn's value
 */
async function waitUntil(fn, timeout, what) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timeout (${timeout}ms) waiting for ${what}`);
    await new Promise(resolve => setTimeout(resolve, 100));
  }
}

/**
 * A systemd NOTIFY_SOCKET stand-in. Node has no unix datagram sockets: a python3 listener
 * prints each datagram as a JSON line.
 * @return {Promise<{path: string, datagrams: string[], close: Function}>} once it listens
 */
async function notifyListener() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'egg-cluster-rs-notify-'));
  const sockPath = path.join(dir, 'notify.sock');
  const listener = childProcess.spawn('python3', [ '-u', '-c', `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps("LISTENING"), flush=True)
while True:
    print(json.dumps(s.recv(4096).decode()), flush=True)
`, sockPath ], { stdio: [ 'ignore', 'pipe', 'inherit' ] });
  const datagrams = [];
  let buf = '';
  listener.stdout.setEncoding('utf8');
  listener.stdout.on('data', chunk => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      datagrams.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
    }
  });
  const close = () => {
    listener.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitUntil(() => datagrams.includes('LISTENING'), 10000, 'the python listener');
  } catch (err) {
    close();
    throw err;
  }
  return { path: sockPath, datagrams, close };
}

/**
 * A TCP socket bound on 127.0.0.1 that this process never accepts on (a net.Server would), as
 * systemd holds one for socket activation: pass it as a child's fd 3 with LISTEN_FDS=1.
 * @return {{handle: Object, port: number}} the libuv handle (close() it) and its port
 */
function boundSocket() {
  // eslint-disable-next-line node/no-deprecated-api
  const { TCP, constants } = process.binding('tcp_wrap');
  const handle = new TCP(constants.SERVER);
  assert.strictEqual(handle.bind('127.0.0.1', 0), 0);
  const addr = {};
  handle.getsockname(addr);
  return { handle, port: addr.port };
}

/**
 * The watchdog (/bin/sh ... egg-cluster-rs-watchdog) a master started: it SIGKILLs the master's
 * children 1 s after the master's death (docs/operations-hardening.md), so a test that needs a
 * tree whose master died kills it first.
 * @param {number} pid - the master's
 * @return {?number} its pid
 */
function watchdogOf(pid) {
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid && fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').includes('egg-cluster-rs-watchdog')) return Number(name);
    } catch (_) {
      // gone meanwhile
    }
  }
  return null;
}

module.exports = {
  watchdogOf,
  notifyListener,
  boundSocket,
  ROOT,
  FIXTURES,
  TMP,
  REFERENCE,
  TS,
  LOG_PREFIX,
  copyFixture,
  getFreePort,
  makeEnv,
  startMaster,
  runScript,
  findProcesses,
  isAlive,
  waitDead,
  killAll,
  track,
  cleanupAll,
  removeTmp,
  get,
  request,
  collectWorkerPids,
  lineIndex,
  logTime,
  waitUntil,
};
