'use strict';

/**
 * egg 4's app worker: a node cluster worker spawned by the (native) master as
 * `node app_worker.js <options json>` when the app runs on egg 4. Ported from @eggjs/cluster 3.0
 * src/app_worker.ts (process mode), with lib/app_worker.js's additions (the early start and the
 * go-ahead, reusePort sockets kept by the master, the drain):
 *  - the framework and the `require` entries are loaded with `importModule`, in the app's
 *    module system (./framework.js);
 *  - `realport` is sent once the app is ready, and the worker reports its listen itself with
 *    `app-start` (`{address, workerId}`; a unix socket as `{address, addressType: -1}`), which
 *    is what the master counts;
 *  - its messages to the master carry `senderWorkerId`.
 */

// first, so that everything the worker loads can come from the cache (Node >= 22)
require('../compile_cache')();
require('../heartbeat')();

const gracefulExit = require('graceful-process');
const { workerId, exitOnBootFailure, reportBootError } = require('../self');
const frameworkLoader = require('./framework');
const debug = require('util').debuglog('egg-cluster:app_worker');
const ConsoleLogger = require('egg-logger').EggConsoleLogger;

// $ node app_worker.js options
const options = JSON.parse(process.argv[2]);
const consoleLogger = new ConsoleLogger({
  level: process.env.EGG_APP_WORKER_LOGGER_LEVEL,
});
const { listenSettings, startServer, drain, exitProcess } = require('../app_server')(options, consoleLogger);
const warmStart = require('../warm_start');
let Application;
let warm;

function send(message) {
  message.senderWorkerId = String(workerId);
  process.send(message);
}

// The go-ahead (see lib/app_worker.js) is listened for before anything is awaited: the master
// may send it while the framework is still loading.
const waitForStart = process.env.EGG_CLUSTER_RS_WAIT_START === '1';
delete process.env.EGG_CLUSTER_RS_WAIT_START;
let goAhead = !waitForStart;
const started = new Promise(resolve => {
  if (!waitForStart) return resolve();
  process.on('internalMessage', function onStart(message) {
    if (message && message.cmd === 'NODE_EGG_CLUSTER_RS_START') {
      process.removeListener('internalMessage', onStart);
      goAhead = true;
      warmStart.goAhead();
      resolve();
    }
  });
});

async function main() {
  const { load, framework } = await frameworkLoader(options);
  for (const mod of options.require || []) {
    await load(mod);
  }
  // Loading the framework is most of a worker's start-up: done while the agent boots — at once,
  // or, when the previous start showed that the agent sleeps long enough, on a spare CPU (never
  // on one the agent's boot needs); the rest of the wait is spent loading the modules the
  // previous start's Application loaded (lib/warm_start.js).
  if (waitForStart && warmStart.holdFrameworkBack(options)) await warmStart.whenCpuSpare(() => goAhead);
  const t = Date.now();
  ({ Application } = await framework());
  warmStart.frameworkLoaded(Date.now() - t);
  warm = warmStart(options);
  if (waitForStart) warm.preload();
  await started;
  warm.stop();
  startApp();
}

function startApp() {
  const app = createApplication();
  let servers = []; // what the worker listens with, once it does

  app.ready(err => {
    if (err) {
      consoleLogger.error(err);
      reportBootError(send, err, options.baseDir);
      consoleLogger.error('[app_worker] start error, exiting with code:1');
      exitProcess();
      return;
    }
    const listen = listenSettings(app);
    app.options.port = listen.port;
    send({
      to: 'master',
      action: 'realport',
      data: {
        port: listen.port,
        protocol: listen.protocol,
        // egg-cluster-rs: with reusePort the master binds one SO_REUSEPORT socket per worker
        // slot and keeps it, so a dead worker's queued connections wait for its replacement.
        reusePort: listen.reusePort,
      },
    });
    app.removeListener('startTimeout', onStartTimeout);
    servers = startServer(app, listen, (server, listen) => {
      reportListening(server, listen);
      setImmediate(warm.record);
    });
  });

  // exit if worker start timeout
  app.once('startTimeout', onStartTimeout);
  function onStartTimeout() {
    consoleLogger.error('[app_worker] start timeout, exiting with code:1');
    exitProcess();
  }

  gracefulExit({
    logger: consoleLogger,
    label: 'app_worker',
    beforeExit: () => drain(servers).then(() => app.close()),
  });
}

exitOnBootFailure(main());

function createApplication() {
  debug('new Application with options %j', options);
  try {
    return new Application(options);
  } catch (err) {
    consoleLogger.error(err);
    reportBootError(send, err, options.baseDir);
    throw err;
  }
}

// @eggjs/cluster 3: the worker reports its listen itself, with `app-start`, which the master counts
function reportListening(server, listen) {
  let address = server.address() || { port: listen.port };
  if (typeof address === 'string') {
    // a unix socket, in the form of the cluster protocol's `listening`
    address = { address, addressType: -1 };
  }
  debug('listening at %j', address);
  send({
    to: 'master',
    action: 'app-start',
    data: { address, workerId },
  });
}
