'use strict';

/**
 * The app worker's warm start (egg-cluster-rs). An app worker that this master starts beside the
 * agent loads the framework, then waits for the go-ahead until the agent is ready — on a real
 * app seconds in which the agent mostly waits on its database. Constructing and booting the
 * Application afterwards is mostly loading modules (75-80 % of egg 3's constructor on the large
 * bench app, docs/benchmark.md). So the worker uses the wait to load the third-party modules —
 * files under a `node_modules` folder: plugins and the libraries they use — that the previous
 * start of the same app (same framework, env and Node) loaded while constructing and booting its
 * Application, in the order they were loaded then. The Application then finds them loaded.
 *
 * What it never does: load the app's own files (their top-level code runs where egg's loader
 * runs it), a native addon, or anything after the go-ahead — it loads one module at a time and
 * yields between them, and stops at the go-ahead, so it can delay the Application by one module
 * at most. A module that fails to load is skipped (its real load fails again, where it would have).
 * The list is `run/egg-cluster-rs-warm-start.json` in the app's baseDir, rewritten when a start
 * loaded a different set. Off with EGG_CLUSTER_RS_WARM_START=0.
 *
 * ESM modules are recorded through `module.registerHooks` (Node >= 22.15) and preloaded with
 * `import()`; on older Node only CommonJS ones are.
 */

const fs = require('fs');
const path = require('path');
const Module = require('module');
const debug = require('util').debuglog('egg-cluster-rs:warm_start');

const VERSION = 1;
// the agent's pid, from the master, to an app worker started beside it (see whenCpuSpare)
const agentPid = Number(process.env.EGG_CLUSTER_RS_AGENT_PID) || 0;
delete process.env.EGG_CLUSTER_RS_AGENT_PID;
// what the decision to hold the framework load back rests on, kept with the list: how long the
// previous start's framework load took, and how long its agent slept (waited on I/O) before
// the go-ahead
const timing = { frameworkMs: null, agentSleepMs: null };
const cpus = typeof require('os').availableParallelism === 'function' ? require('os').availableParallelism() : require('os').cpus().length;
const SLICE_MS = 10; // work between two yields to the event loop while preloading
// whenCpuSpare: how long each look at the agent's and the machine's CPU use lasts; below what
// share of the time runnable the agent's main thread is taken for waiting on I/O; how much idle
// makes a CPU free
const WINDOW_MS = 50;
const CLK_TCK = 100; // Linux's USER_HZ, what /proc/<pid>/stat counts in
const POLL_MS = 5;
const AGENT_WAITING = 0.25;
const IDLE_CPU = 0.9;

/**
 * @param {Object} options - the worker's options (baseDir, framework, env)
 * @return {{preload: Function, stop: Function, record: Function}} preload() resolves when done or
 *   stopped; stop() at the go-ahead; record() once the worker listens
 */
module.exports = function warmStart(options) {
  const off = { preload: () => Promise.resolve(), stop: stopGate, record() {} };
  if (process.env.EGG_CLUSTER_RS_WARM_START === '0' || !options || typeof options.baseDir !== 'string') return off;
  const file = path.join(options.baseDir, 'run', 'egg-cluster-rs-warm-start.json');
  const key = keyOf(options);
  // what the framework load left loaded: not ours to record
  const before = new Set(Object.keys(require.cache));
  const esm = [];
  let hooks = null;
  if (typeof Module.registerHooks === 'function') {
    try {
      hooks = Module.registerHooks({
        load(url, context, nextLoad) {
          const result = nextLoad(url, context);
          if (result && result.format === 'module' && url.startsWith('file:') && isThirdParty(url)) esm.push(url);
          return result;
        },
      });
    } catch (_) {
      hooks = null;
    }
  }
  let stopped = false;
  let previous = null;

  return {
    async preload() {
      previous = read(file, key);
      debug('preload: %s modules listed, agent %s', previous ? previous.cjs.length + previous.esm.length : 'no', agentPid);
      if (!previous || !agentPid) return;
      let n = 0;
      const t0 = Date.now();
      let sliceStart = 0;
      const yieldNow = async () => {
        if (Date.now() - sliceStart < SLICE_MS) return;
        await new Promise(resolve => setImmediate(resolve));
        // only while the agent sleeps: on an idle CPU beside a busy agent, both workers would
        // start at once and take the agent's CPU too
        await whenCpuSpare(() => stopped, { idleCpu: false });
        sliceStart = Date.now();
      };
      await yieldNow();
      for (const filename of previous.cjs) {
        if (stopped) return debug('preload stopped at the go-ahead after %d modules, %d ms', n, Date.now() - t0);
        if (require.cache[filename]) continue;
        n++;
        try {
          require(filename);
        } catch (_) {
          // loaded again, and failing again, where the app loads it
        }
        await yieldNow();
      }
      for (const url of previous.esm) {
        if (stopped) return debug('preload stopped at the go-ahead after %d modules, %d ms', n, Date.now() - t0);
        n++;
        try {
          await import(url);
        } catch (_) {
          // same
        }
        await yieldNow();
      }
      debug('preload done: %d modules, %d ms', n, Date.now() - t0);
    },
    stop() {
      stopped = true;
      stopGate();
    },
    record() {
      if (hooks) {
        try {
          hooks.deregister();
        } catch (_) {
          // a hook left registered only costs a function call per module
        }
        hooks = null;
      }
      try {
        const cjs = Object.keys(require.cache).filter(f => !before.has(f) && isThirdParty(f) && !f.endsWith('.node'));
        const old = previous || read(file, key);
        // a worker started alone (a reload's, a refork's) learnt nothing about the agent's boot
        const learnt = timing.frameworkMs == null && old ? { frameworkMs: old.frameworkMs, agentSleepMs: old.agentSleepMs } : timing;
        const next = { ...key, cjs, esm: [ ...new Set(esm) ], ...learnt };
        if (old && same(old.cjs, next.cjs) && same(old.esm, next.esm) && holdBack(old) === holdBack(next) &&
          (old.frameworkMs != null || next.frameworkMs == null)) return;
        fs.mkdirSync(path.dirname(file), { recursive: true });
        const tmp = `${file}.${process.pid}.tmp`;
        fs.writeFileSync(tmp, JSON.stringify(next));
        fs.renameSync(tmp, file);
      } catch (_) {
        // a warm start is only ever a speed-up
      }
    },
  };
};

/**
 * Resolves once this early worker may use a CPU without taking it from the agent's boot, which
 * is what the app waits for: over the last window the agent's main thread was mostly neither on
 * a CPU nor waiting for one (it waits on I/O, on its database), or (`idleCpu`) a whole CPU of
 * the machine was idle. Resolves at once without the agent's pid or /proc, and as soon as
 * `done()` (the go-ahead came).
 * @param {Function} done - true: stop waiting
 * @param {{idleCpu?: boolean}} [opts] - false: only while the agent sleeps
 * @return {Promise<void>} -
 */
async function whenCpuSpare(done, { idleCpu = true } = {}) {
  if (!agentPid) return;
  const g = cpuGate();
  const t0 = Date.now();
  while (!g.agentSleeps && !(idleCpu && g.cpuIdle) && !done()) await new Promise(resolve => setTimeout(resolve, POLL_MS));
  const waited = Date.now() - t0;
  if (waited > WINDOW_MS * 2) debug('waited %d ms for a spare CPU (agent asleep: %s, a CPU idle: %s)', waited, g.agentSleeps, g.cpuIdle);
}

// One look at the agent's and the machine's CPU use every WINDOW_MS while the worker waits.
let gate = null;
function cpuGate() {
  if (gate) return gate;
  gate = { agentSleeps: false, cpuIdle: false, timer: null };
  let before = sample();
  if (!before) return stopGate();
  gate.timer = setInterval(() => {
    const now = sample();
    if (!now) return stopGate();
    const wallNs = Number(now.at - before.at) || 1;
    // the agent's main thread on a CPU or waiting for one: a starved agent is not a sleeping one
    const agentRunnable = (now.agent - before.agent) / wallNs;
    const ticks = (now.machine - before.machine) || 1;
    const idleCpus = (now.idle - before.idle) / ticks * cpus;
    gate.agentSleeps = agentRunnable < AGENT_WAITING;
    gate.cpuIdle = idleCpus > IDLE_CPU;
    before = now;
  }, WINDOW_MS);
  gate.timer.unref();
  return gate;
}

// at the go-ahead: no more looks
function stopGate() {
  if (gate && gate.timer) clearInterval(gate.timer);
  gate = { agentSleeps: true, cpuIdle: true, timer: null };
  return gate;
}

// the agent's main thread's time on a CPU plus waiting for one (ns, /proc/<pid>/schedstat); the
// machine's idle and total clock ticks; when
function sample() {
  try {
    const [ onCpu, runDelay ] = fs.readFileSync(`/proc/${agentPid}/schedstat`, 'latin1').split(' ').map(Number);
    const cpu = fs.readFileSync('/proc/stat', 'latin1');
    const t = cpu.slice(0, cpu.indexOf('\n')).trim().split(/\s+/).slice(1).map(Number);
    return { at: process.hrtime.bigint(), agent: onCpu + runDelay, idle: t[3] + (t[4] || 0), machine: t.reduce((a, b) => a + b, 0) };
  } catch (_) {
    // no /proc or no schedstat, or the agent is gone: nothing to wait for
    return null;
  }
}

function isThirdParty(fileOrUrl) {
  return fileOrUrl.includes(`${path.sep}node_modules${path.sep}`) || fileOrUrl.includes('/node_modules/');
}

function read(file, key) {
  try {
    const list = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (!list || Object.keys(key).some(k => list[k] !== key[k]) || !Array.isArray(list.cjs) || !Array.isArray(list.esm)) return null;
    // only what it can be: absolute CommonJS paths and file: URLs under node_modules
    list.cjs = list.cjs.filter(f => typeof f === 'string' && path.isAbsolute(f) && isThirdParty(f) && !f.endsWith('.node'));
    list.esm = list.esm.filter(u => typeof u === 'string' && u.startsWith('file:') && isThirdParty(u));
    return list;
  } catch (_) {
    return null;
  }
}

function same(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

module.exports.whenCpuSpare = whenCpuSpare;

/**
 * Whether an early worker should load the framework only on a spare CPU (whenCpuSpare) rather
 * than at once: when the previous start's agent slept (waited on I/O) at least as long as that
 * start's framework load took, the load fits in the agent's sleep and loading it beside the
 * agent's boot would only slow the agent down; when the agent never waits (a small app), the
 * framework loads beside it, on what CPU is left.
 * @param {Object} options - the worker's options
 * @return {boolean} -
 */
module.exports.holdFrameworkBack = function holdFrameworkBack(options) {
  if (!agentPid || process.env.EGG_CLUSTER_RS_WARM_START === '0' || !options || typeof options.baseDir !== 'string') return false;
  const list = read(path.join(options.baseDir, 'run', 'egg-cluster-rs-warm-start.json'), keyOf(options));
  debug('framework load held back: %s (previous start: framework %s ms, agent asleep %s ms)', !!list && holdBack(list), list && list.frameworkMs, list && list.agentSleepMs);
  return !!list && holdBack(list);
};

/** The early worker loaded the framework in `ms`. */
module.exports.frameworkLoaded = function frameworkLoaded(ms) {
  timing.frameworkMs = Math.round(ms);
};

/** The go-ahead came: how long has the agent slept so far (its main thread neither on a CPU nor waiting for one). */
module.exports.goAhead = function goAhead() {
  stopGate();
  if (!agentPid) return;
  try {
    const [ onCpuNs, runDelayNs ] = fs.readFileSync(`/proc/${agentPid}/schedstat`, 'latin1').split(' ').map(Number);
    const stat = fs.readFileSync(`/proc/${agentPid}/stat`, 'latin1');
    const startTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const uptimeMs = Number(fs.readFileSync('/proc/uptime', 'latin1').split(' ')[0]) * 1000;
    const ageMs = uptimeMs - startTicks * 1000 / CLK_TCK;
    timing.agentSleepMs = Math.max(0, Math.round(ageMs - (onCpuNs + runDelayNs) / 1e6));
    debug('go-ahead: the agent has slept %d ms of its %d ms', timing.agentSleepMs, Math.round(ageMs));
  } catch (_) {
    // no schedstat: no decision to learn
  }
};

function holdBack(list) {
  return list.frameworkMs > 0 && list.agentSleepMs >= list.frameworkMs;
}

function keyOf(options) {
  return { v: VERSION, framework: String(options.framework), env: String(options.env || process.env.EGG_SERVER_ENV || ''), node: process.version };
}

// for the tests: where a worker keeps its list
module.exports.listFile = baseDir => path.join(baseDir, 'run', 'egg-cluster-rs-warm-start.json');
