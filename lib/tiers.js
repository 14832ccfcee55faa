'use strict';

/**
 * The master's JS thread runs a small callback per native event (index.js onEvent) and nothing
 * hot: V8's optimizing tiers (Maglev, TurboFan) cannot pay for themselves there. They cost all the
 * same, once, when the first function of the process gets hot enough — in a master after a couple
 * of thousand events (a count of bytecode run, not a time): the compiler's own code is faulted in
 * (3.4-3.7 MiB of node's text) and its output kept (~0.6 MiB). The long soak saw that as a 4.3 MiB
 * step of the master's RSS, at the same event in three runs (docs/reliability.md "The master's
 * memory"). So a master in process mode keeps its JS to V8's non-optimizing tiers (Ignition and
 * Sparkplug). Not in worker_threads mode: the app's threads share the process's flags. A tier flag
 * of the user's own (in execArgv or NODE_OPTIONS) wins.
 */

// V8's names, as Node takes them: `--no-x` and `--x=v` forms, `_` for `-`
const TIER_FLAG = /^--(?:no-)?(?:turbofan|opt|maglev|max-opt|jitless|always-turbofan|always-opt|sparkplug)(?:=|$)/;

/**
 * @param {string[]} execArgv - the process's execArgv
 * @param {string} [nodeOptions] - NODE_OPTIONS
 * @return {boolean} whether the user set a V8 tier flag of their own
 */
function chosenByUser(execArgv, nodeOptions) {
  return [ ...execArgv, ...String(nodeOptions || '').split(/\s+/) ]
    .some(arg => TIER_FLAG.test(arg.replace(/_/g, '-')));
}

/**
 * Turns V8's optimizing tiers off for this process, unless the user chose tiers.
 * @return {boolean} whether it did
 */
function baselineOnly() {
  if (chosenByUser(process.execArgv, process.env.NODE_OPTIONS)) return false;
  const v8 = require('v8');
  v8.setFlagsFromString('--no-turbofan');
  v8.setFlagsFromString('--no-maglev');
  return true;
}

module.exports = { chosenByUser, baselineOnly };
