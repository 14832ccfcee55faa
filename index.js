'use strict';

/**
 * egg-cluster-rs: the egg-cluster 2.x master, implemented in Rust (napi-rs).
 *
 * This module is two things at once:
 *  - the cluster API: `startCluster(options, callback)`, an async function (egg 4's
 *    @eggjs/cluster form) that also takes egg-cluster's callback (egg 3 form);
 *    `createCluster(options, callback)`, the same started synchronously (it throws on bad
 *    options) and returning a Promise that carries the master's controls;
 *  - an egg *framework*: it re-exports egg's classes, so it can be passed as
 *    `framework` (egg-scripts `--framework=<this dir>`, egg-mock `customEgg`) and
 *    the app/agent workers load `options.framework` and read `Application`/`Agent`.
 *
 * Loading this file is cheap, by `require` or `import`: egg is only loaded when one of its
 * exports is read (workers do, the master never does) and the native addon is only loaded by
 * startCluster(). Where no binary loads, startCluster() starts the JS master of the app's egg
 * instead (lib/fallback.js).
 */

const path = require('path');

// captured at module load, like egg-utils' initCwd (survives a later chdir / mocked cwd)
const INIT_CWD = process.cwd();

// egg's exports, read from egg on first access, so that this package can be an app's framework:
// the workers and egg-mock's / @eggjs/mock's `mm.app()` read `Application` and `Agent` from it.
// The master never reads them, and must not load egg whatever starts it: launchers that
// `import()` this file (@eggjs/scripts, @eggjs/bin and @eggjs/mock through @eggjs/utils'
// importModule) get an ESM namespace, which Node fills by reading every export that
// cjs-module-lexer finds in the source, getters included. So these getters are defined in a loop,
// a form the lexer does not see: from ESM only `startCluster`, `createCluster` and `default` are
// named exports, and egg's classes are `default.Application` & co (importModule unwraps
// `default`, see below). A CommonJS `require` sees them all.
//
// Which egg: in the workers, the one the master resolved for the app (EGG_CLUSTER_RS_EGG: egg 3
// or egg 4, see docs/guide.md "egg 4"); elsewhere the `egg` this package resolves (the app's,
// where npm installed this package as the app's dependency).
const EGG_EXPORTS = [
  'start', 'Application', 'Agent', 'AppWorkerLoader', 'AgentWorkerLoader', 'Controller', 'Service',
  'Subscription', 'BaseContextClass', 'Boot',
  // egg 4's own (undefined on egg 3)
  'Helper', 'Singleton', 'Request', 'Response', 'Context', 'Router', 'EggApplicationCore', 'startEgg',
  'HttpClient', 'ContextHttpClient', 'CookieLimitExceedError', 'MessageUnhandledRejectionError',
];
for (const name of EGG_EXPORTS) {
  Object.defineProperty(exports, name, {
    enumerable: true,
    get() {
      return require(process.env.EGG_CLUSTER_RS_EGG || 'egg')[name];
    },
  });
}

// The ESM interop marker that @eggjs/utils' importModule unwraps: an `import()` of this file
// whose `default` (module.exports, for a CommonJS module) has `__esModule` and a `default` gives
// the launcher module.exports itself, egg's getters included; a `require` of it likewise
// (`obj.__esModule && 'default' in obj` → `obj.default`). TypeScript's default-import helper
// reads `default` too. Not enumerable: `Object.keys()` of this module stays the API and egg's.
Object.defineProperty(exports, '__esModule', { value: true });
Object.defineProperty(exports, 'default', { value: exports });

/**
 * Start an egg application in cluster mode (master in this process, one agent
 * worker and `workers` app workers as child processes).
 *
 * As with egg-cluster, a start that fails (the agent or an app worker dies before
 * ready, a start timeout) exits this process with code 1: the callback is then never
 * called and the Promise never settles.
 *
 * An async function, as egg 4's launchers (@eggjs/mock 6 asserts it) expect: bad options
 * reject the Promise (as @eggjs/cluster's do) instead of throwing; a launcher that does not
 * handle it dies of the unhandled rejection with the error on stderr and exit code 1, as an
 * egg 3 launcher does of egg-cluster's synchronous throw.
 *
 * @param {Object} options - see index.d.ts ClusterOptions
 * @param {Function} [callback] - called with no argument when the cluster is ready
 * @return {Promise<{port?: number, debugPort?: number, address: string, protocol: string}>}
 *   resolves when ready
 */
exports.startCluster = async function startCluster(options, callback) {
  return exports.createCluster(options, callback);
};

/**
 * startCluster, started synchronously: throws on bad options (egg-cluster's constructor does).
 *
 * @param {Object} options - see index.d.ts ClusterOptions
 * @param {Function} [callback] - called with no argument when the cluster is ready
 * @return {Promise<{port?: number, debugPort?: number, address: string, protocol: string}>}
 *   resolves when ready; carries non-enumerable members: `master`, an EventEmitter that emits
 *   the `{ to: 'master' }` messages the native master did not handle itself (`action`, `data`)
 *   and `reload-done`; `reload()`, a rolling reload resolving with its outcome; `scale(n)`;
 *   `status()`, resolving with the cluster's status snapshot;
 *   `upgrade()`, a master upgrade resolving with its outcome
 */
exports.createCluster = function createCluster(options, callback) {
  const os = require('os');
  const v8 = require('v8');
  const EventEmitter = require('events');
  const fallback = require('./lib/fallback');
  const native = fallback.loadNative();
  // no binary for this platform: the app's own JS master (docs/platforms.md)
  if (!native) return fallback.createCluster(options, callback, __dirname);

  const emitter = new EventEmitter();
  let onThread;
  // promise.status() callers, answered in request order by the master thread
  const statusWaiters = [];
  // promise.upgrade() callers, by id (the outcome says which)
  const upgradeWaiters = new Map();
  let upgradeSeq = 0;
  let ready = false;
  let resolveReady;
  const promise = new Promise(resolve => {
    resolveReady = resolve;
  });
  Object.defineProperty(promise, 'master', { value: emitter, enumerable: false });

  // napi's thread-safe function convention puts an error first; the native side never sets it
  function onEvent(_err, kind, payload) {
    switch (kind) {
      case 'ready':
        if (ready) return;
        ready = true;
        // process mode (no thread was asked for): from now on this thread only relays events
        if (!onThread) require('./lib/tiers').baselineOnly();
        if (typeof callback === 'function') callback();
        resolveReady(JSON.parse(payload));
        break;
      case 'parent':
        if (process.connected && typeof process.send === 'function') {
          try {
            // With a callback, a write to a channel the parent just closed (EPIPE: a launcher
            // disconnects at egg-ready while the workers still talk to it) is reported to it;
            // without one it is an 'error' event on `process`, which kills the master.
            process.send(JSON.parse(payload), ignore);
          } catch (_) {
            // the channel closed in between: same as egg-cluster's hasParent=false
          }
        }
        break;
      case 'master': {
        const msg = JSON.parse(payload);
        if (msg && msg.action) emitter.emit(msg.action, msg.data);
        break;
      }
      case 'status': {
        const resolve = statusWaiters.shift();
        if (resolve) resolve(JSON.parse(payload));
        break;
      }
      case 'upgrade': {
        const { id, ...outcome } = JSON.parse(payload);
        const resolve = upgradeWaiters.get(id);
        upgradeWaiters.delete(id);
        if (resolve) resolve(outcome);
        break;
      }
      case 'thread':
        // worker_threads mode: create or terminate a thread (created on first use)
        onThread = onThread || require('./lib/threads')(master);
        onThread(JSON.parse(payload));
        break;
      case 'exit':
        process.exit(Number(payload));
        break;
      default:
        break;
    }
  }

  // throws synchronously (Error with code ERR_EGG_CLUSTER_OPTIONS) on bad options
  const master = new native.Master(JSON.stringify(options || {}), {
    env: { ...process.env },
    cwd: process.cwd(),
    initCwd: INIT_CWD,
    packageDir: __dirname,
    execArgv: process.execArgv,
    cpus: os.cpus().length,
  }, {
    execPath: process.execPath,
    execArgv: childExecArgv(),
    tzOffsetMinutes: -new Date().getTimezoneOffset(),
    // egg-logger's console colours for stdout, decided as chalk 4 does (without loading chalk)
    color: require('supports-color').stdout !== false,
    agentWorkerFile: workerFile('agent', 'commonjs'),
    appWorkerFile: workerFile('app', 'commonjs'),
    egg4AgentWorkerFile: workerFile('agent', 'esm'),
    egg4AppWorkerFile: workerFile('app', 'esm'),
    nodeVersion: process.version,
    debugPort: process.debugPort,
    // what an upgrade starts the new master with: this very command line
    masterArgs: [ ...process.execArgv, ...process.argv.slice(1) ],
    hasParent: typeof process.send === 'function',
  }, onEvent);

  if (typeof process.send === 'function') {
    // parent -> master (the native side stamps from:'parent' and routes it)
    process.on('message', msg => {
      master.fromParent(JSON.stringify(msg));
    });
    process.once('disconnect', () => master.parentDisconnected());
  }

  // keep these listeners for the whole life of the master: a second signal while
  // closing must not reach node's default handler (which would kill the master);
  // the native side ignores repeats
  for (const sig of [ 'SIGINT', 'SIGQUIT', 'SIGTERM' ]) {
    process.on(sig, () => {
      const { heap_size_limit, used_heap_size } = v8.getHeapStatistics();
      master.onSignal(sig, heap_size_limit, used_heap_size);
    });
  }

  // live worker replacement: SIGUSR2 reloads (nodemon/recluster's convention; Node keeps
  // SIGUSR1 for the inspector), SIGTTIN/SIGTTOU add/retire an app worker (gunicorn's)
  process.on('SIGUSR2', () => master.reload(true));
  process.on('SIGTTIN', () => master.scaleBy(1));
  process.on('SIGTTOU', () => master.scaleBy(-1));
  Object.defineProperty(promise, 'reload', {
    enumerable: false,
    value() {
      const done = new Promise(resolve => emitter.once('reload-done', resolve));
      master.reload(false);
      return done;
    },
  });
  // master upgrade (docs/upgrade.md): SIGHUP, as nginx/gunicorn reload on it. Only without a
  // controlling terminal: there SIGHUP is the terminal's hangup, which must still end the master
  // (Node's default) rather than start a new one in the background.
  if (!hasControllingTerminal()) process.on('SIGHUP', () => master.upgrade(null));
  Object.defineProperty(promise, 'upgrade', {
    enumerable: false,
    value() {
      const id = ++upgradeSeq;
      return new Promise(resolve => {
        upgradeWaiters.set(id, resolve);
        master.upgrade(id);
      });
    },
  });
  Object.defineProperty(promise, 'scale', {
    enumerable: false,
    value(workers) {
      if (!Number.isInteger(workers) || workers < 1) {
        const err = new TypeError(`workers should be a positive integer, got ${workers}`);
        err.code = 'ERR_EGG_CLUSTER_OPTIONS';
        throw err;
      }
      master.scaleTo(workers);
    },
  });

  Object.defineProperty(promise, 'status', {
    enumerable: false,
    value() {
      return new Promise(resolve => {
        statusWaiters.push(resolve);
        master.status();
      });
    },
  });

  process.once('exit', code => master.onExit(code));

  return promise;
};

/**
 * In an app worker or the agent: adds a prom-client Registry to those the master's /metrics
 * merges over the workers (besides prom-client's default registry, which it finds by itself;
 * docs/observability.md). Does nothing visible outside a cluster of this master.
 * @param {Object} registry - a prom-client Registry
 */
exports.addMetricsRegistry = function addMetricsRegistry(registry) {
  require('./lib/app_metrics').addRegistry(registry);
};

// Where the workers are started from: a path every egg-scripts / @eggjs/scripts `stop` matches in
// its sweep for leftover workers (lib/workers/README.md); `commonjs` for egg 3, `esm` for egg 4.
function workerFile(role, dialect) {
  const file = `${role}_worker.js`;
  return path.join(__dirname, 'lib/workers/egg-cluster/lib', file, '@eggjs/cluster/dist', file, '@eggjs/cluster/dist', dialect, file);
}

function ignore() {}

// Whether this process has a controlling terminal: /dev/tty opens only then (ENXIO otherwise).
function hasControllingTerminal() {
  const fs = require('fs');
  try {
    fs.closeSync(fs.openSync('/dev/tty', fs.constants.O_RDONLY | fs.constants.O_NOCTTY));
    return true;
  } catch (_) {
    return false;
  }
}

// process.execArgv without `-e`/`-p` and their code: a master started with `node -e` would
// otherwise make every child run that code again (lib/exec_argv.js).
function childExecArgv() {
  return require('./lib/exec_argv').withoutEval(process.execArgv);
}
