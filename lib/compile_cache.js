'use strict';

/**
 * Node >= 22: V8's compile cache for every CommonJS module a worker loads from here on (loading
 * the framework is most of a worker's start), kept under the app's `run/` dir so each start of
 * every worker reuses what the previous ones compiled. Node < 22 has no such API: nothing
 * happens. Off with EGG_CLUSTER_RS_COMPILE_CACHE=0 (Node's own NODE_DISABLE_COMPILE_CACHE=1
 * works too). Called first thing by the worker scripts, with their argv[2].
 * @param {string} optionsJson - the worker's options (argv[2]); only `baseDir` is read
 * @return {?string} the cache directory, when the cache is on
 */
module.exports = function enableCompileCache(optionsJson) {
  const mod = require('module');
  if (typeof mod.enableCompileCache !== 'function' || process.env.EGG_CLUSTER_RS_COMPILE_CACHE === '0') return null;
  try {
    const { baseDir } = JSON.parse(optionsJson);
    if (typeof baseDir !== 'string' || !baseDir) return null;
    const dir = require('path').join(baseDir, 'run', 'compile-cache');
    const { status, directory } = mod.enableCompileCache(dir);
    // a cache the user already enabled (NODE_COMPILE_CACHE) is theirs, and stays where it is
    return status === mod.constants.compileCacheStatus.ENABLED ? directory : null;
  } catch (_) {
    // a cache is only ever a speed-up: a worker starts without it
    return null;
  }
};
