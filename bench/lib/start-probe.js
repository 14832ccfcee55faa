'use strict';

/**
 * Preloaded (`NODE_OPTIONS=--require`) into the master and every worker by
 * bench/start-breakdown.js: appends `{pid, role, mark, t}` lines (t: epoch ms, sub-ms) to
 * $START_PROBE_OUT at the moments a start goes through. A measuring tool, never loaded otherwise.
 *
 *   origin      the process started (performance.timeOrigin)
 *   bootstrap   Node's bootstrap done (performance.nodeTiming)
 *   main        the main script starts
 *   fw-start/fw-end   require(options.framework) in a worker script
 *   new-start/new-end the Agent / Application constructor (egg 3 loads plugins, config,
 *                     extends, services, ... synchronously in it)
 *   go-ahead    an app worker got egg-cluster-rs's go-ahead
 *   listen      an app worker's server is listening
 *   send:<action>     process.send of agent-start, realport, listening, bench-ready
 */

// NODE_OPTIONS reaches worker threads too (egg-cluster-rs's watchdog thread): their marks would
// be taken for the process's
if (!require('worker_threads').isMainThread) return;

const fs = require('fs');
const Module = require('module');
const { performance } = require('perf_hooks');

const out = process.env.START_PROBE_OUT;
const script = process.argv[1] || '';
const role = /agent_worker\.js$/.test(script) ? 'agent' : /app_worker\.js$/.test(script) ? 'app' : 'master';
const now = () => performance.timeOrigin + performance.now();
const mark = (name, t = now()) => fs.appendFileSync(out, `${JSON.stringify({ pid: process.pid, role, mark: name, t })}\n`);

mark('origin', performance.timeOrigin);
mark('bootstrap', performance.timeOrigin + performance.nodeTiming.bootstrapComplete);

let framework = null;
if (role !== 'master') {
  try {
    framework = JSON.parse(process.argv[2]).framework;
  } catch (_) {
    // not a worker of ours
  }
}

const load = Module._load;
Module._load = function(request, parent, isMain) {
  if (isMain) {
    mark('main');
    patchSend();
    return load.apply(this, arguments);
  }
  if (!framework || request !== framework) return load.apply(this, arguments);
  const first = !Module._cache[require.resolve(framework)];
  if (first) mark('fw-start');
  const exp = load.apply(this, arguments);
  if (first) {
    mark('fw-end');
    // time the constructor: the worker script reads `.Agent` / `.Application` from the exports
    const key = role === 'agent' ? 'Agent' : 'Application';
    const Orig = exp[key];
    if (typeof Orig === 'function') {
      // a Proxy, not a subclass: egg's loader walks the prototype chain for each eggPath
      exp[key] = new Proxy(Orig, {
        construct(target, args) {
          mark('new-start');
          const o = Reflect.construct(target, args);
          mark('new-end');
          return o;
        },
      });
    }
  }
  return exp;
};

if (role === 'app') {
  // egg-cluster's workers report the listen through the cluster module, not process.send
  const net = require('net');
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function() {
    this.once('listening', () => mark('listen'));
    return listen.apply(this, arguments);
  };
}

// an ESM worker script (@eggjs/cluster 4) never goes through Module._load as the main module
if (role !== 'master') patchSend();

function patchSend() {
  if (patchSend.done) return;
  patchSend.done = true;
  process.on('internalMessage', m => {
    if (m && m.cmd === 'NODE_EGG_CLUSTER_RS_START') mark('go-ahead');
  });
  if (typeof process.send !== 'function') return;
  const send = process.send;
  process.send = function(msg) {
    const action = msg && msg.action;
    if ([ 'agent-start', 'realport', 'listening', 'reuse-port-listening', 'app-start', 'bench-ready' ].includes(action)) mark(`send:${action}`);
    return send.apply(this, arguments);
  };
}
