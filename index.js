'use strict';

/**
 * egg-cluster-rs: the egg-cluster 2.x master, implemented in Rust (napi-rs).
 *
 * This module is two things at once:
 *  - the cluster API: `startCluster(options, callback)` (egg-cluster / egg 3 form,
 *    and returns a Promise like egg 4's);
 *  - an egg *framework*: it re-exports egg 3's classes, so it can be passed as
 *    `framework` (egg-scripts `--framework=<this dir>`, egg-mock `customEgg`) and
 *    the app/agent workers `require(options.framework).Application`.
 *
 * Requiring this file is cheap: egg is only loaded when one of its exports is
 * read (workers do, the master never does) and the native addon is only loaded
 * by startCluster().
 */

const path = require('path');

// captured at module load, like egg-utils' initCwd (survives a later chdir / mocked cwd)
const INIT_CWD = process.cwd();

const EGG_EXPORTS = [
  'start',
  'Application',
  'Agent',
  'AppWorkerLoader',
  'AgentWorkerLoader',
  'Controller',
  'Service',
  'Subscription',
  'BaseContextClass',
  'Boot',
];

for (const name of EGG_EXPORTS) {
  Object.defineProperty(exports, name, {
    enumerable: true,
    configurable: true,
    get() {
      return require('egg')[name];
    },
  });
}

/**
 * Start an egg application in cluster mode (master in this process, one agent
 * worker and `workers` app workers as child processes).
 *
 * @param {Object} options - see index.d.ts ClusterOptions
 * @param {Function} [callback] - called with no argument when the cluster is ready,
 *   or with an Error when the start failed before ready
 * @return {Promise<{port: number, debugPort?: number, address: string, protocol: string}>}
 *   resolves when ready; carries a non-enumerable `master` EventEmitter that emits the
 *   `{ to: 'master' }` messages the native master did not handle itself (`action`, `data`)
 */
exports.startCluster = function startCluster(options, callback) {
  const os = require('os');
  const v8 = require('v8');
  const EventEmitter = require('events');
  const native = require('./native.js');

  const emitter = new EventEmitter();
  let settled = false;
  let resolveReady;
  let rejectReady;
  const promise = new Promise((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  Object.defineProperty(promise, 'master', { value: emitter, enumerable: false });
  if (typeof callback === 'function') {
    // the caller handles errors through the callback and may ignore the Promise
    promise.catch(() => {});
  }

  function fail(err) {
    if (settled) {
      if (emitter.listenerCount('error') > 0) emitter.emit('error', err);
      return;
    }
    settled = true;
    if (typeof callback === 'function') callback(err);
    rejectReady(err);
  }

  function onEvent(err, kind, payload) {
    if (err) {
      fail(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    switch (kind) {
      case 'ready': {
        if (settled) return;
        settled = true;
        const info = JSON.parse(payload);
        if (typeof callback === 'function') callback();
        resolveReady(info);
        break;
      }
      case 'parent':
        if (process.connected && typeof process.send === 'function') {
          try {
            process.send(JSON.parse(payload));
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
      case 'exit':
        process.exit(Number(payload));
        break;
      case 'error': {
        const e = new Error(payload);
        e.code = 'ERR_EGG_CLUSTER';
        fail(e);
        break;
      }
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
    color: supportsColor(),
    agentWorkerFile: path.join(__dirname, 'lib/agent_worker.js'),
    appWorkerFile: path.join(__dirname, 'lib/app_worker.js'),
    nodeVersion: process.version,
    debugPort: process.debugPort,
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

  process.once('exit', code => master.onExit(code));

  return promise;
};

/**
 * Whether stdout should get ANSI colours, as chalk 4 / supports-color 7 decide it
 * for egg-logger's console formatter (without loading chalk in the master).
 * @return {boolean} -
 */
function supportsColor() {
  const argv = process.argv;
  const env = process.env;
  const hasFlag = flag => {
    const prefix = flag.startsWith('-') ? '' : (flag.length === 1 ? '-' : '--');
    const position = argv.indexOf(prefix + flag);
    const terminatorPosition = argv.indexOf('--');
    return position !== -1 && (terminatorPosition === -1 || position < terminatorPosition);
  };

  let forceColor;
  if (hasFlag('no-color') || hasFlag('no-colors') || hasFlag('color=false') || hasFlag('color=never')) {
    forceColor = 0;
  } else if (hasFlag('color') || hasFlag('colors') || hasFlag('color=true') || hasFlag('color=always')) {
    forceColor = 1;
  }
  if ('FORCE_COLOR' in env) {
    if (env.FORCE_COLOR === 'true') {
      forceColor = 1;
    } else if (env.FORCE_COLOR === 'false') {
      forceColor = 0;
    } else {
      forceColor = env.FORCE_COLOR.length === 0 ? 1 : Math.min(parseInt(env.FORCE_COLOR, 10), 3);
    }
  }

  if (forceColor === 0) return false;
  if (hasFlag('color=16m') || hasFlag('color=full') || hasFlag('color=truecolor') || hasFlag('color=256')) {
    return true;
  }
  const isTTY = require('tty').isatty(1);
  if (!isTTY && forceColor === undefined) return false;
  const min = forceColor || 0;
  if (env.TERM === 'dumb') return min > 0;
  if ('CI' in env) {
    if ([ 'TRAVIS', 'CIRCLECI', 'APPVEYOR', 'GITLAB_CI', 'GITHUB_ACTIONS', 'BUILDKITE' ].some(sign => sign in env) ||
      env.CI_NAME === 'codeship') {
      return true;
    }
    return min > 0;
  }
  if ('TEAMCITY_VERSION' in env) return /^(9\.(0*[1-9]\d*)\.|\d{2,}\.)/.test(env.TEAMCITY_VERSION);
  if (env.COLORTERM === 'truecolor') return true;
  if ('TERM_PROGRAM' in env) {
    if (env.TERM_PROGRAM === 'iTerm.app' || env.TERM_PROGRAM === 'Apple_Terminal') return true;
  }
  if (/-256(color)?$/i.test(env.TERM)) return true;
  if (/^screen|^xterm|^vt100|^vt220|^rxvt|color|ansi|cygwin|linux/i.test(env.TERM)) return true;
  if ('COLORTERM' in env) return true;
  return min > 0;
}

// process.execArgv minus an `-e`/`-p <code>` pair, as child_process.fork does: a master
// started with `node -e` would otherwise make every child run that code again (a fork bomb).
function childExecArgv() {
  let execArgv = process.execArgv;
  if (process._eval != null) {
    const index = execArgv.lastIndexOf(process._eval);
    if (index > 0) {
      execArgv = execArgv.slice();
      execArgv.splice(index - 1, 2);
    }
  }
  return execArgv;
}
