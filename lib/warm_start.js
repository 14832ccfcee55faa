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

const VERSION = 1;
const SLICE_MS = 10; // work between two yields to the event loop while preloading
const AGENT_POLL_MS = 5; // how often a paused preload looks whether the agent still runs

/**
 * @param {Object} options - the worker's options (baseDir, framework, env)
 * @return {{preload: Function, stop: Function, record: Function}} preload() resolves when done or
 *   stopped; stop() at the go-ahead; record() once the worker listens
 */
module.exports = function warmStart(options) {
  const off = { preload: () => Promise.resolve(), stop() {}, record() {} };
  if (process.env.EGG_CLUSTER_RS_WARM_START === '0' || !options || typeof options.baseDir !== 'string') return off;
  const file = path.join(options.baseDir, 'run', 'egg-cluster-rs-warm-start.json');
  const key = { v: VERSION, framework: String(options.framework), env: String(options.env || process.env.EGG_SERVER_ENV || ''), node: process.version };
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
  // the agent's pid, from the master: the preload runs only while its main thread is not
  // runnable (it waits on I/O), never beside its boot on a CPU it needs
  const agentPid = Number(process.env.EGG_CLUSTER_RS_AGENT_PID) || 0;
  delete process.env.EGG_CLUSTER_RS_AGENT_PID;

  return {
    async preload() {
      previous = read(file, key);
      if (!previous || !agentPid) return;
      let sliceStart = 0;
      const yieldNow = async () => {
        if (Date.now() - sliceStart < SLICE_MS) return;
        await new Promise(resolve => setImmediate(resolve));
        while (!stopped && runnable(agentPid)) await new Promise(resolve => setTimeout(resolve, AGENT_POLL_MS));
        sliceStart = Date.now();
      };
      await yieldNow();
      for (const filename of previous.cjs) {
        if (stopped) return;
        if (require.cache[filename]) continue;
        try {
          require(filename);
        } catch (_) {
          // loaded again, and failing again, where the app loads it
        }
        await yieldNow();
      }
      for (const url of previous.esm) {
        if (stopped) return;
        try {
          await import(url);
        } catch (_) {
          // same
        }
        await yieldNow();
      }
    },
    stop() {
      stopped = true;
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
        const next = { ...key, cjs, esm: [ ...new Set(esm) ] };
        const old = previous || read(file, key);
        if (old && same(old.cjs, next.cjs) && same(old.esm, next.esm)) return;
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

/** The process's main thread is running or waiting for a CPU (`R` in /proc/<pid>/stat). */
function runnable(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat[stat.lastIndexOf(')') + 2] === 'R';
  } catch (_) {
    // no /proc, or the agent is gone: nothing to wait for
    return false;
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

// for the tests: where a worker keeps its list
module.exports.listFile = baseDir => path.join(baseDir, 'run', 'egg-cluster-rs-warm-start.json');
