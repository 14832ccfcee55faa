'use strict';

/**
 * app worker: a node cluster worker (NODE_UNIQUE_ID set, `cluster.worker` exists)
 * spawned by the (native) master as `node app_worker.js <options json>`; its
 * `server.listen(port)` is answered by the master over the cluster protocol.
 * Ported from egg-cluster 2.5 lib/app_worker.js (process mode).
 *
 * Start-up, top to bottom: load the framework; wait for the master's go-ahead if it asks
 * for one; construct the Application and report `realport`; once the app is ready, create
 * the server(s) and listen (on the port, a unix socket, or the sticky internal port),
 * then report `listening`. On SIGTERM (the master's close), graceful-process runs the drain
 * (lib/drain.js: the requests in flight finish, bounded by the close timeout), then
 * `app.close()`, then exits.
 */

// first, so that everything the worker loads can come from the cache (Node >= 22)
require('./compile_cache')();
require('./heartbeat')();

// $ node app_worker.js options
const options = JSON.parse(process.argv[2]);
if (options.require) {
  // inject
  require('./preload')(options.require, options.baseDir);
}

const gracefulExit = require('graceful-process');
const debug = require('util').debuglog('egg-cluster:app_worker');
const { reportBootError, exitOnBootFailure } = require('./self');
const ConsoleLogger = require('egg-logger').EggConsoleLogger;

const consoleLogger = new ConsoleLogger({
  level: process.env.EGG_APP_WORKER_LOGGER_LEVEL,
});
const { listenSettings, startServer, drain, exitProcess } = require('./app_server')(options, consoleLogger);
const warmStart = require('./warm_start');
let Application;
let warm;

// As with egg-cluster, the Application is constructed only once the agent has started
// (cluster-client followers need its leader): the master says so with an internal message,
// which neither the app nor `process.on('message')` ever sees.
const waitForStart = process.env.EGG_CLUSTER_RS_WAIT_START === '1';
delete process.env.EGG_CLUSTER_RS_WAIT_START;
if (waitForStart) {
  let started = false;
  process.on('internalMessage', function onStart(message) {
    if (message && message.cmd === 'NODE_EGG_CLUSTER_RS_START') {
      process.removeListener('internalMessage', onStart);
      started = true;
      warmStart.goAhead();
      // still waiting for a CPU to load the framework on: bootEarly() goes on now
      if (!Application) return;
      warm.stop();
      startApp();
    }
  });
  // Loading the framework is most of a worker's start-up: a worker the master starts while the
  // agent boots (egg-cluster-rs) does it then — at once, or, when the previous start showed that
  // the agent sleeps long enough, on a spare CPU (never on one the agent's boot needs) — and
  // spends the rest of the wait loading the modules the previous start's Application loaded
  // (lib/warm_start.js).
  exitOnBootFailure((async function bootEarly() {
    if (warmStart.holdFrameworkBack(options)) await warmStart.whenCpuSpare(() => started);
    const t = Date.now();
    Application = require(options.framework).Application;
    warmStart.frameworkLoaded(Date.now() - t);
    warm = warmStart(options);
    if (started) {
      warm.stop();
      return startApp();
    }
    warm.preload();
  })());
} else {
  Application = require(options.framework).Application;
  warm = warmStart(options);
  startApp();
}

function startApp() {
  const app = createApplication();
  const listen = listenSettings(app);
  let servers = []; // what the worker listens with, once it does

  process.send({
    to: 'master',
    action: 'realport',
    data: {
      port: listen.port,
      protocol: listen.protocol,
      // egg-cluster-rs: with reusePort the master binds one SO_REUSEPORT socket per worker slot
      // and keeps it, so a dead worker's queued connections wait for its replacement.
      reusePort: listen.reusePort,
    },
  });

  app.ready(err => {
    if (err) {
      consoleLogger.error(err);
      reportBootError(m => process.send(m), err, options.baseDir);
      consoleLogger.error('[app_worker] start error, exiting with code:1');
      exitProcess();
      return;
    }
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

function createApplication() {
  debug('new Application with options %j', options);
  try {
    return new Application(options);
  } catch (err) {
    consoleLogger.error(err);
    reportBootError(m => process.send(m), err, options.baseDir);
    throw err;
  }
}

// the master tells the reusePort listens apart by their action
function reportListening(server, listen) {
  process.send({
    to: 'master',
    action: listen.reusePort ? 'reuse-port-listening' : 'listening',
    data: server.address() || { port: listen.port },
    reusePort: listen.reusePort,
  });
}
