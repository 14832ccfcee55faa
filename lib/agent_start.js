'use strict';

/**
 * What the egg 3 and egg 4 agent workers (lib/agent_worker.js, lib/egg4/agent_worker.js) share
 * once the framework is loaded: construct the Agent, tell the master `agent-start` when it is
 * ready, exit on a start error, close it on SIGTERM (graceful-process).
 *
 * agent worker only exit in two cases:
 *  - receive signal SIGTERM, exit code 0 (exit gracefully)
 *  - receive disconnect event, exit code 110 (maybe master exit in accident)
 * @param {Function} Agent - the framework's Agent class
 * @param {Object} options - the worker's argv[2]
 * @param {Function} send - how the worker sends to the master (egg 4 stamps `senderWorkerId`)
 */
module.exports = function startAgent(Agent, options, send) {
  const gracefulExit = require('graceful-process');
  const { sigtermSelf } = require('./self');
  const debug = require('util').debuglog('egg-cluster:agent_worker');
  const ConsoleLogger = require('egg-logger').EggConsoleLogger;
  const consoleLogger = new ConsoleLogger({ level: process.env.EGG_AGENT_WORKER_LOGGER_LEVEL });

  debug('new Agent with options %j', options);
  let agent;
  try {
    agent = new Agent(options);
  } catch (err) {
    consoleLogger.error(err);
    throw err;
  }

  let failed = false;
  function startErrorHandler(err) {
    // once: a failed boot may both emit `error` and fail `ready`
    if (failed) return;
    failed = true;
    consoleLogger.error(err);
    consoleLogger.error('[agent_worker] start error, exiting with code:1');
    // graceful-process runs agent.close() before the exit
    sigtermSelf();
  }

  agent.ready(err => {
    // don't send started message to master when start error; and exit even if the framework
    // failed `ready` without an `error` event
    if (err) return startErrorHandler(err);

    agent.removeListener('error', startErrorHandler);
    send({ action: 'agent-start', to: 'master' });
  });

  // exit if agent start error
  agent.once('error', startErrorHandler);

  gracefulExit({
    logger: consoleLogger,
    label: 'agent_worker',
    beforeExit: () => agent.close(),
  });
};
