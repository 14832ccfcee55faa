'use strict';

/**
 * egg 4's agent worker: a plain child process with a node IPC channel, spawned by the (native)
 * master as `node agent_worker.js <options json>` when the app runs on egg 4.
 * Ported from @eggjs/cluster 3.0 src/agent_worker.ts (process mode): the framework and the
 * `require` entries are loaded with `importModule`, in the app's module system (./framework.js),
 * and the worker's messages to the master carry `senderWorkerId`.
 * The Agent's start and close are lib/agent_start.js.
 */

// first, so that everything the worker loads can come from the cache (Node >= 22)
require('../compile_cache')();
require('../heartbeat')();

const { workerId, exitOnBootFailure } = require('../self');
const frameworkLoader = require('./framework');

function send(message) {
  message.senderWorkerId = String(workerId);
  process.send(message);
}

async function main() {
  // $ node agent_worker.js options
  const options = JSON.parse(process.argv[2]);
  const { load, framework } = await frameworkLoader(options);
  for (const mod of options.require || []) {
    await load(mod);
  }
  const { Agent } = await framework();
  require('../agent_start')(Agent, options, send);
}

exitOnBootFailure(main());
