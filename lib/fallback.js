'use strict';

/**
 * Where the native master cannot load (no binary for this platform: macOS, Windows, an
 * unsupported libc...), startCluster/createCluster start the JS master the app's egg depends on
 * instead — egg-cluster for egg 3, @eggjs/cluster for egg 4 — after one warning line, so
 * `egg-bin dev`, egg-mock and egg-scripts keep working on a laptop. What only the native master
 * can do is refused, never dropped silently. See docs/platforms.md.
 */

const fs = require('fs');
const path = require('path');

// Options only the native master implements: passed explicitly, they are an error here.
const NATIVE_ONLY_OPTIONS = [ 'stickyKey', 'stickyTrustedProxies', 'maxMemoryRestart', 'memoryCheckInterval', 'metrics', 'shutdownDelay', 'workerTimeout', 'reloadConcurrency' ];

// Variables only the native master reads. Deployment environments are often shared with dev
// machines, so these are not an error: the warning line names the ones that are set.
const NATIVE_ONLY_ENV = [
  'EGG_CLUSTER_RS_LOG', 'EGG_CLUSTER_RS_REFORK_LIMIT', 'EGG_CLUSTER_RS_REFORK_DURATION',
  'EGG_CLUSTER_RS_HEALTH_INTERVAL', 'EGG_CLUSTER_RS_RELOAD_TIMEOUT', 'EGG_CLUSTER_RS_COMPILE_CACHE',
  'EGG_CLUSTER_RS_SHUTDOWN_DELAY', 'EGG_CLUSTER_RS_WORKER_TIMEOUT', 'EGG_CLUSTER_RS_START_TIMEOUT', 'EGG_CLUSTER_RS_RELOAD_CONCURRENCY',
  'EGG_CLUSTER_RS_UPGRADE_TIMEOUT',
];

const PLATFORM = `${process.platform}-${process.arch}`;

let native;
let nativeError;
let warned = false;

/**
 * The addon, loaded on first use (workers and a plain `require` of the package never load it).
 * @return {Object|null} null when no binary loads here (see {@link whyNoNative})
 */
function loadNative() {
  if (native === undefined) {
    try {
      native = require('../native.js');
    } catch (err) {
      native = null;
      nativeError = err;
    }
  }
  return native;
}

/**
 * @return {string} why the addon did not load, in one line: the loader's first sentence and the
 *   first load it tried (napi-rs' loader chains its attempts as causes, the first one deepest:
 *   the platform's own file, or the dlopen error of a binary that is there but cannot load)
 */
function whyNoNative() {
  const first = msg => String(msg).split('\n')[0].replace(/\. .*$/, '');
  let why = first(nativeError && nativeError.message);
  let cause = nativeError;
  while (cause && cause.cause) cause = Array.isArray(cause.cause) ? cause.cause[0] : cause.cause;
  if (cause && cause !== nativeError) why += `: ${first(cause.message)}`;
  return `no native binary loads on ${PLATFORM} (${why})`;
}

function fail(code, message) {
  const err = new Error(message);
  err.code = code;
  return err;
}

/**
 * @param {Object} options -
 * @return {string[]} the native-only options and combinations given
 */
function nativeOnly(options) {
  const given = NATIVE_ONLY_OPTIONS.filter(key => options[key] != null).map(key => `options.${key}`);
  if (options.startMode === 'worker_threads') {
    // egg-cluster's threads take no socket hand-over, and run one thread per port
    if (options.sticky) given.push('options.sticky with startMode \'worker_threads\'');
    const ports = Array.isArray(options.ports) && options.ports.length;
    if (!ports && Number(options.workers) > 1) given.push('options.workers > 1 with startMode \'worker_threads\' and no ports');
  }
  return given;
}

/**
 * `<dir>/node_modules/<name>` for `from` and each ancestor, as Node looks a package up
 * (without `require.resolve`: egg 4 does not export its package.json).
 * @param {string} name -
 * @param {string[]} froms - directories, in order
 * @return {string|null} the package's directory
 */
function findPackage(name, froms) {
  for (const from of froms) {
    for (let dir = path.resolve(from); ; dir = path.dirname(dir)) {
      if (path.basename(dir) !== 'node_modules') {
        const candidate = path.join(dir, 'node_modules', name);
        if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
      }
      if (path.dirname(dir) === dir) break;
    }
  }
  return null;
}

function readPackage(dir) {
  return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
}

/**
 * The JS master of the egg the app runs on, decided as the native master decides the egg
 * dialect (src/options/framework.rs `resolve_egg`): the framework itself when it is egg, else
 * the egg it depends on (this package as the framework re-exports the app's egg: its own copy
 * is skipped), else the app's; then the cluster package that egg depends on, from egg's dir.
 * @param {Object} options -
 * @param {string} packageDir - this package's directory
 * @return {{ egg?: string, cluster?: string, why?: string }} -
 */
function resolveMaster(options, packageDir) {
  const baseDir = options.baseDir || process.cwd();
  // what egg-cluster / @eggjs/cluster resolve themselves; throws its own error when not found
  const framework = require('@eggjs/utils').getFrameworkPath({ baseDir, framework: options.framework || options.customEgg });
  let egg = framework;
  if (readPackage(framework).name !== 'egg') {
    const own = fs.realpathSync(framework) === fs.realpathSync(packageDir);
    egg = findPackage('egg', [ ...(own ? [] : [ framework ]), baseDir, process.cwd(), packageDir ]);
    if (!egg) return { why: `no egg found for the framework ${framework}` };
  }
  const pkg = readPackage(egg);
  const deps = pkg.dependencies || {};
  const name = [ 'egg-cluster', '@eggjs/cluster' ].find(dep => deps[dep]);
  if (!name) return { egg, why: `egg ${pkg.version} at ${egg} depends on neither egg-cluster nor @eggjs/cluster` };
  const cluster = findPackage(name, [ egg ]);
  if (!cluster) return { egg, why: `${name}, which egg ${pkg.version} at ${egg} depends on, is not installed` };
  return { egg, cluster };
}

/**
 * createCluster on the JS master. Throws (bad options, EGG_CLUSTER_RS_REQUIRE_NATIVE, a
 * native-only option, no JS master) before anything starts.
 * @param {Object} options -
 * @param {Function} [callback] -
 * @param {string} packageDir - this package's directory
 * @return {Promise<void>} resolves when ready; `master` is the JS master, `reload()`,
 *   `scale()`, `status()` and `upgrade()` are refused
 */
function createCluster(options, callback, packageDir) {
  options = options || {};
  const reason = whyNoNative();
  const required = process.env.EGG_CLUSTER_RS_REQUIRE_NATIVE;
  if (required && required !== '0' && required !== 'false') {
    throw fail('ERR_EGG_CLUSTER_NO_NATIVE', `EGG_CLUSTER_RS_REQUIRE_NATIVE is set and ${reason}`);
  }
  const given = nativeOnly(options);
  if (given.length) {
    throw fail('ERR_EGG_CLUSTER_NATIVE_ONLY',
      `${given.join(', ')} ${given.length > 1 ? 'need' : 'needs'} the native master, and ${reason}; ` +
      'remove it to run on the JS master (see docs/platforms.md)');
  }
  const found = resolveMaster(options, packageDir);
  if (!found.cluster) {
    throw fail('ERR_EGG_CLUSTER_NO_MASTER',
      `no cluster master can start: ${reason}, and no JS master was found (${found.why}); ` +
      'install egg-cluster-rs on a supported platform, or egg-cluster (egg 3) / @eggjs/cluster (egg 4) with egg');
  }

  const clusterPkg = readPackage(found.cluster);
  if (!warned) {
    warned = true;
    const ignored = NATIVE_ONLY_ENV.filter(name => process.env[name] != null);
    const { EggConsoleLogger } = require('egg-logger');
    new EggConsoleLogger({ level: 'WARN' }).warn('[egg-cluster-rs] %s: starting the JS master %s %s instead%s',
      reason, clusterPkg.name, clusterPkg.version, ignored.length ? ` (ignoring ${ignored.join(', ')})` : '');
  }

  // the workers load egg through this package when it is the framework (index.js)
  process.env.EGG_CLUSTER_RS_EGG = found.egg;
  // `node -e "...startCluster()"`: the JS masters fork with this process's execArgv, and a fork
  // that inherits `-e <code>` runs the launcher again instead of its worker file
  require('./exec_argv').dropEvalFromProcess();
  const mod = require(found.cluster);
  const Master = mod.Master || require(path.join(found.cluster, 'lib/master'));
  const master = new Master(options);
  const promise = Promise.resolve(master.ready()).then(() => {
    if (typeof callback === 'function') callback();
  });
  Object.defineProperty(promise, 'master', { value: master, enumerable: false });
  const refuse = name => fail('ERR_EGG_CLUSTER_NATIVE_ONLY', `${name} needs the native master, and ${reason}`);
  Object.defineProperty(promise, 'reload', { enumerable: false, value: () => Promise.reject(refuse('reload()')) });
  Object.defineProperty(promise, 'status', { enumerable: false, value: () => Promise.reject(refuse('status()')) });
  Object.defineProperty(promise, 'upgrade', { enumerable: false, value: () => Promise.reject(refuse('upgrade()')) });
  Object.defineProperty(promise, 'scale', {
    enumerable: false,
    value() {
      throw refuse('scale()');
    },
  });
  return promise;
}

module.exports = { loadNative, whyNoNative, createCluster };
