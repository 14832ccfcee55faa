'use strict';

/**
 * The `require` option: modules each worker loads before anything else. They are looked up
 * from the app's `baseDir` first (where `ts-node/register` and the like are installed), then
 * from this package, as @eggjs/cluster does: with this package linked, in a workspace or
 * installed globally, a lookup from here alone would not find the app's own modules.
 * @param {Array<string>} mods - options.require
 * @param {string} baseDir - options.baseDir
 */
module.exports = function preload(mods, baseDir) {
  for (const mod of mods) {
    let resolved = mod;
    if (baseDir) {
      try {
        resolved = require.resolve(mod, { paths: [ baseDir ] });
      } catch (err) {
        if (err.code !== 'MODULE_NOT_FOUND') throw err;
      }
    }
    require(resolved);
  }
};
