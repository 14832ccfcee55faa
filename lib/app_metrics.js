'use strict';

/**
 * The app's own prom-client metrics, for the master's /metrics (docs/observability.md): the
 * master asks each child with an internal message on its channel; the child answers with
 * `getMetricsAsJSON()` of every prom-client registry it has, which the master merges over the
 * children as prom-client's AggregatorRegistry does. Neither the app nor
 * `process.on('message')` sees these messages.
 *
 * Which registries: the default registry of every copy of prom-client the app has loaded (found
 * in require.cache, so the worker never loads prom-client itself: an app without it answers
 * `null`), and those the app names with `require('egg-cluster-rs').addMetricsRegistry(registry)`.
 */

const CMD = 'NODE_EGG_CLUSTER_RS_METRICS';
// on `process`-wide state, so that every copy of this package in the process shares the list
const kRegistries = Symbol.for('egg-cluster-rs:metrics-registries');

function named() {
  if (!globalThis[kRegistries]) globalThis[kRegistries] = new Set();
  return globalThis[kRegistries];
}

/**
 * @param {Object} registry - a prom-client Registry (anything with getMetricsAsJSON())
 */
function addRegistry(registry) {
  if (!registry || typeof registry.getMetricsAsJSON !== 'function') {
    throw new TypeError('addMetricsRegistry: expected a prom-client Registry (with getMetricsAsJSON())');
  }
  named().add(registry);
}

/** @return {Object[]} the registries to answer with, each once */
function registries() {
  const out = new Set();
  for (const file of Object.keys(require.cache)) {
    if (!file.endsWith('/prom-client/index.js')) continue;
    const mod = require.cache[file];
    const register = mod && mod.exports && mod.exports.register;
    if (register && typeof register.getMetricsAsJSON === 'function') out.add(register);
  }
  for (const r of named()) out.add(r);
  return [ ...out ];
}

/**
 * @return {Promise<Object[]|null>} every metric of every registry, null without prom-client
 */
async function collect() {
  const regs = registries();
  if (!regs.length) return null;
  const all = await Promise.all(regs.map(r => r.getMetricsAsJSON()));
  return [].concat(...all);
}

/**
 * Answers the master's questions from now on. Called once by the heartbeat.
 */
function answer() {
  process.on('internalMessage', message => {
    if (!message || message.cmd !== CMD) return;
    const reply = metrics => {
      // a callback: a closed channel is not an 'error' event on process
      if (process.connected) process.send({ cmd: CMD, seq: message.seq, metrics }, noop);
    };
    collect().then(reply, err => {
      // the master counts this child out of the scrape
      reply(null);
      process.emitWarning(`egg-cluster-rs: metrics for /metrics: ${err && err.message}`);
    });
  });
}

function noop() {}

module.exports = { answer, addRegistry, collect };
