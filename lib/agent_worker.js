'use strict';

/**
 * agent worker: a plain child process with a node IPC channel, spawned by the
 * (native) master as `node agent_worker.js <options json>`.
 * Ported from egg-cluster 2.5 lib/agent_worker.js (process mode); the Agent's start and close
 * are lib/agent_start.js.
 */

// first, so that everything the worker loads can come from the cache (Node >= 22)
require('./compile_cache')();
require('./heartbeat')();

// $ node agent_worker.js options
const options = JSON.parse(process.argv[2]);
if (options.require) {
  // inject
  require('./preload')(options.require, options.baseDir);
}

require('./agent_start')(require(options.framework).Agent, options, message => process.send(message));
