'use strict';

/**
 * Node >= 22: V8's compile cache for every module a worker loads from here on (loading the
 * framework is most of a worker's start), so each start of every worker reuses what the previous
 * ones compiled. The master picks the directory and passes it in EGG_CLUSTER_RS_COMPILE_CACHE_DIR:
 * `<baseDir>/.egg/compile-cache` on egg >= 4.1 (where egg's own master and `egg-bin manifest`
 * keep theirs), `<baseDir>/run/compile-cache` on egg 3 and 4.0; none when it is off
 * (EGG_CLUSTER_RS_COMPILE_CACHE=0) or the user's (NODE_COMPILE_CACHE, NODE_DISABLE_COMPILE_CACHE:
 * Node enables or disables it by itself then). Portable where Node can (>= 24.12): entries are
 * keyed by paths relative to the directory, so a cache built into an image stays valid wherever
 * the app is moved; a NODE_COMPILE_CACHE_PORTABLE the user set is left to Node. Called first thing
 * by the worker scripts.
 * @return {?string} the cache directory, when this call enabled it
 */
module.exports = function enableCompileCache() {
  const dir = process.env.EGG_CLUSTER_RS_COMPILE_CACHE_DIR;
  delete process.env.EGG_CLUSTER_RS_COMPILE_CACHE_DIR;
  const mod = require('module');
  if (!dir || typeof mod.enableCompileCache !== 'function') return null;
  try {
    let result;
    try {
      const portable = process.env.NODE_COMPILE_CACHE_PORTABLE === undefined ? true : undefined;
      result = mod.enableCompileCache({ directory: dir, portable });
    } catch (_) {
      // Node < 24.12 takes the directory only (and has no portable cache)
      result = mod.enableCompileCache(dir);
    }
    return result.status === mod.constants.compileCacheStatus.ENABLED ? result.directory : null;
  } catch (_) {
    // a cache is only ever a speed-up: a worker starts without it
    return null;
  }
};
