'use strict';

/**
 * egg 4's agent worker: a plain child process with a node IPC channel, spawned by the (native)
 * master as `node agent_worker.js <options json>` when the app runs on egg 4.
 * Ported from @eggjs/cluster 3.0 src/agent_worker.ts (process mode): the framework and the
 * `require` entries are loaded with `importModule` (an egg 4 app may be ESM), and the worker's
 * messages to the master carry `senderWorkerId`.
 *
 * agent worker only exit in two cases:
 *  - receive signal SIGTERM, exit code 0 (exit gracefully)
 *  - receive disconnect event, exit code 110 (maybe master exit in accident)
 */

// first, so that everything the worker loads can come from the cache (Node >= 22)
require('../compile_cache')(process.argv[2]);

const gracefulExit = require('graceful-process');
const { workerId, sigtermSelf } = require('../self');
const { importModule } = require('@eggjs/utils');
const debug = require('util').debuglog('egg-cluster:agent_worker');
const ConsoleLogger = require('egg-logger').EggConsoleLogger;

function send(message) {
  message.senderWorkerId = String(workerId);
  process.send(message);
}

// graceful-process runs agent.close() before the exit
function kill() {
  sigtermSelf();
}

async function main() {
  // $ node agent_worker.js options
  const options = JSON.parse(process.argv[2]);
  for (const mod of options.require || []) {
    await importModule(mod, { paths: [ options.baseDir ] });
  }

  const consoleLogger = new ConsoleLogger({ level: process.env.EGG_AGENT_WORKER_LOGGER_LEVEL });
  const { Agent } = await importModule(options.framework, { paths: [ options.baseDir ] });
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
    kill();
  }

  agent.ready(err => {
    // don't send started message to master when start error
    if (err) return;

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
}

main();
