'use strict';

/**
 * agent worker: a plain child process with a node IPC channel, spawned by the
 * (native) master as `node agent_worker.js <options json>`.
 * Ported from egg-cluster 2.5 lib/agent_worker.js (process mode).
 *
 * agent worker only exit in two cases:
 *  - receive signal SIGTERM, exit code 0 (exit gracefully)
 *  - receive disconnect event, exit code 110 (maybe master exit in accident)
 */

// first, so that everything the worker loads can come from the cache (Node >= 22)
require('./compile_cache')(process.argv[2]);

// $ node agent_worker.js options
const options = JSON.parse(process.argv[2]);
if (options.require) {
  // inject
  require('./preload')(options.require, options.baseDir);
}

const gracefulExit = require('graceful-process');
const { sigtermSelf } = require('./self');
const debug = require('util').debuglog('egg-cluster:agent_worker');
const ConsoleLogger = require('egg-logger').EggConsoleLogger;
const consoleLogger = new ConsoleLogger({ level: process.env.EGG_AGENT_WORKER_LOGGER_LEVEL });

const Agent = require(options.framework).Agent;
debug('new Agent with options %j', options);
let agent;
try {
  agent = new Agent(options);
} catch (err) {
  consoleLogger.error(err);
  throw err;
}

function startErrorHandler(err) {
  consoleLogger.error(err);
  consoleLogger.error('[agent_worker] start error, exiting with code:1');
  // graceful-process runs agent.close() before the exit
  sigtermSelf();
}

agent.ready(err => {
  // don't send started message to master when start error
  if (err) return;

  agent.removeListener('error', startErrorHandler);
  process.send({ action: 'agent-start', to: 'master' });
});

// exit if agent start error
agent.once('error', startErrorHandler);

gracefulExit({
  logger: consoleLogger,
  label: 'agent_worker',
  beforeExit: () => agent.close(),
});
