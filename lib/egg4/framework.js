'use strict';

/**
 * How egg 4's workers load the framework and the `require` entries: in the app's own module
 * system (its package.json "type"), as @eggjs/scripts starts an ESM app with start-cluster.mjs and a
 * CommonJS one with start-cluster.cjs — `import()` for an ESM app, `require` for a CommonJS one.
 * egg 4.0 ships both builds, and an ESM app's `import { Controller } from 'egg'` gets the ESM one:
 * a worker that `require`d egg would load a second copy of egg (its loading paid twice, two sets
 * of classes). egg 4.1 ships only ES modules, which `require` and `import()` share.
 *
 * When the framework is this package, which only re-exports the app's egg (index.js, whose
 * getters `require` it), the worker loads the app's egg itself: the one the master resolved
 * (EGG_CLUSTER_RS_EGG), in the app's module system, without this package's detour.
 */

const fs = require('fs');
const path = require('path');

const PACKAGE_DIR = path.join(__dirname, '../..');

function readType(baseDir) {
  try {
    return JSON.parse(fs.readFileSync(path.join(baseDir, 'package.json'), 'utf8')).type;
  } catch (_) {
    // the master has read it already: a worker does not decide the app's validity
    return undefined;
  }
}

function isThisPackage(framework) {
  try {
    return fs.realpathSync(framework) === fs.realpathSync(PACKAGE_DIR);
  } catch (_) {
    return false;
  }
}

/**
 * @param {Object} options - the worker's options (argv[2]): `baseDir`, `framework`
 * @return {Promise<{load: Function, framework: Function}>} `load(mod)` imports a `require` entry
 *   (looked up from baseDir), `framework()` resolves with the framework's exports
 */
module.exports = async function frameworkLoader(options) {
  const { importModule } = readType(options.baseDir) === 'module' ? await import('@eggjs/utils') : require('@eggjs/utils');
  const load = mod => importModule(mod, { paths: [ options.baseDir ] });
  const egg = process.env.EGG_CLUSTER_RS_EGG;
  return { load, framework: () => load(egg && isThisPackage(options.framework) ? egg : options.framework) };
};
