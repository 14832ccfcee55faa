'use strict';

/**
 * egg 4's app worker: a node cluster worker spawned by the (native) master as
 * `node app_worker.js <options json>` when the app runs on egg 4. Ported from @eggjs/cluster 3.0
 * src/app_worker.ts (process mode), with lib/app_worker.js's additions (the early start and the
 * go-ahead, reusePort sockets kept by the master, the drain):
 *  - the framework and the `require` entries are loaded with `importModule` (the app may be
 *    ESM);
 *  - `realport` is sent once the app is ready, and the worker reports its listen itself with
 *    `app-start` (`{address, workerId}`; a unix socket as `{address, addressType: -1}`), which
 *    is what the master counts;
 *  - its messages to the master carry `senderWorkerId`.
 */

const os = require('os');
const fs = require('fs');
const gracefulExit = require('graceful-process');
const { importModule } = require('@eggjs/utils');
const { trackServer, requestsInFlight, drainServers } = require('../drain');
const debug = require('util').debuglog('egg-cluster:app_worker');
const ConsoleLogger = require('egg-logger').EggConsoleLogger;

// $ node app_worker.js options
const options = JSON.parse(process.argv[2]);
const consoleLogger = new ConsoleLogger({
  level: process.env.EGG_APP_WORKER_LOGGER_LEVEL,
});
let Application;

function send(message) {
  message.senderWorkerId = String(process.pid);
  process.send(message);
}

// The go-ahead (see lib/app_worker.js) is listened for before anything is awaited: the master
// may send it while the framework is still loading.
const waitForStart = process.env.EGG_CLUSTER_RS_WAIT_START === '1';
delete process.env.EGG_CLUSTER_RS_WAIT_START;
const started = new Promise(resolve => {
  if (!waitForStart) return resolve();
  process.on('internalMessage', function onStart(message) {
    if (message && message.cmd === 'NODE_EGG_CLUSTER_RS_START') {
      process.removeListener('internalMessage', onStart);
      resolve();
    }
  });
});

async function main() {
  for (const mod of options.require || []) {
    await importModule(mod, { paths: [ options.baseDir ] });
  }
  // Loading the framework is most of a worker's start-up: done while the agent boots.
  ({ Application } = await importModule(options.framework, { paths: [ options.baseDir ] }));
  await started;
  startApp();
}

function startApp() {
  const app = createApplication();
  let servers = []; // what the worker listens with, once it does

  app.ready(err => {
    if (err) {
      consoleLogger.error(err);
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
    servers = startServer(app, listen);
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

main();

/**
 * Finish the requests in flight before app.close(); give up a little before the master's
 * SIGKILL (EGG_APP_CLOSE_TIMEOUT, else EGG_MASTER_CLOSE_TIMEOUT, default 5000 ms), leaving
 * app.close() the rest.
 * @param {net.Server[]} servers -
 * @return {Promise} -
 */
function drain(servers) {
  const requests = requestsInFlight(servers);
  if (requests > 0) {
    consoleLogger.info('[app_worker] draining %d request%s', requests, requests === 1 ? '' : 's');
  }
  const closeTimeout = parseTimeout(process.env.EGG_APP_CLOSE_TIMEOUT || process.env.EGG_MASTER_CLOSE_TIMEOUT);
  return drainServers(servers, { timeout: closeTimeout - Math.min(1000, closeTimeout / 2) });
}

// as the master reads it: a non-negative number of ms, else 5000
function parseTimeout(raw) {
  const ms = Number(raw);
  return raw && raw.trim() && Number.isFinite(ms) && ms >= 0 ? Math.floor(ms) : 5000;
}

function createApplication() {
  debug('new Application with options %j', options);
  try {
    return new Application(options);
  } catch (err) {
    consoleLogger.error(err);
    throw err;
  }
}

/**
 * Where and how to listen, from the options and the app's `config.cluster`; settles
 * `options.port` and `options.reusePort` as egg-cluster does.
 * @param {Object} app -
 * @return {Object} { port, protocol, reusePort, https (options or null), listenConfig }
 */
function listenSettings(app) {
  const clusterConfig = app.config.cluster || /* istanbul ignore next */ {};
  const listenConfig = clusterConfig.listen || /* istanbul ignore next */ {};
  const httpsOptions = Object.assign({}, clusterConfig.https, options.https);
  const https = httpsOptions.key && httpsOptions.cert ? httpsOptions : null;
  const port = options.port = options.port || listenConfig.port;

  // SO_REUSEPORT exists only on some platforms (Linux 3.9+, DragonFlyBSD 3.6+, FreeBSD 12.0+,
  // Solaris 11.4, AIX 7.2.5+)
  const supportedPlatforms = [ 'linux', 'freebsd', 'sunos', 'aix' ];
  let reusePort = options.reusePort = options.reusePort || listenConfig.reusePort;
  if (reusePort && !supportedPlatforms.includes(os.platform())) {
    reusePort = false;
    options.reusePort = false;
    debug('platform %s is not supported currently, set reusePort to false', os.platform());
  }

  return { port, protocol: https ? 'https' : 'http', reusePort, https, listenConfig };
}

/**
 * Create the server(s), listen, report `listening` to the master
 * @param {Object} app -
 * @param {Object} listen - listenSettings()
 * @return {net.Server[]} the servers it listens with
 */
function startServer(app, listen) {
  const { server, debugPortServer } = createServers(app, listen.https);
  trackServer(server);
  if (debugPortServer) trackServer(debugPortServer);

  server.once('error', err => {
    consoleLogger.error('[app_worker] server got error: %s, code: %s', err.message, err.code);
    exitProcess();
  });

  // emit `server` event in app
  app.emit('server', server);

  const servers = [ server ];
  if (options.sticky) {
    listenSticky(server);
  } else {
    if (!listenOnPort(server, listen)) return servers;
    if (debugPortServer) {
      debug('listen on debug port: %s', options.debugPort);
      debugPortServer.listen(options.debugPort);
      servers.push(debugPortServer);
    }
  }

  server.once('listening', () => {
    let address = server.address() || { port: listen.port };
    if (typeof address === 'string') {
      // a unix socket, in the form of the cluster protocol's `listening`
      address = { address, addressType: -1 };
    }
    debug('listening at %j', address);
    send({
      to: 'master',
      action: 'app-start',
      data: { address, workerId: process.pid },
    });
  });
  return servers;
}

/**
 * The app's server, and the plain HTTP one for `options.debugPort` (the same server when
 * the app is not HTTPS)
 * @param {Object} app -
 * @param {Object} [https] - https options, with file paths
 * @return {Object} { server, debugPortServer }
 */
function createServers(app, https) {
  const debugPort = options.debugPort;
  if (https) {
    const tlsOptions = Object.assign({}, https, {
      key: fs.readFileSync(https.key),
      cert: fs.readFileSync(https.cert),
      ca: https.ca && fs.readFileSync(https.ca),
    });
    const server = require('https').createServer(tlsOptions, app.callback());
    const debugPortServer = debugPort ? require('http').createServer(app.callback()) : null;
    return { server, debugPortServer };
  }
  const server = require('http').createServer(app.callback());
  return { server, debugPortServer: debugPort ? server : null };
}

/**
 * Sticky mode: the worker listens on an internal port on 127.0.0.1 (it only has to listen
 * for the master to count it as started); the master accepts on the real port and hands each
 * connection over as a `sticky-session:connection` message carrying the socket.
 * @param {Object} server -
 */
function listenSticky(server) {
  server.listen(options.stickyWorkerPort, '127.0.0.1');
  process.on('message', (message, connection) => {
    if (message !== 'sticky-session:connection') return;
    // Emulate a connection event on the server with the connection the master sent us.
    server.emit('connection', connection);
    connection.resume();
  });
}

/**
 * Listen on the unix socket or the port (with the configured hostname). With reusePort too
 * this is a plain listen: the master answers it with the worker slot's own SO_REUSEPORT
 * socket. (Passing `reusePort: true` to listen() would, on Node >= 22.12, make the worker
 * bind by itself, bypassing the master.)
 * @param {Object} server -
 * @param {Object} listen - listenSettings()
 * @return {boolean} false when the port is unusable (the worker is exiting)
 */
function listenOnPort(server, { port, listenConfig }) {
  if (listenConfig.path) {
    server.listen(listenConfig.path);
    return true;
  }
  if (typeof port !== 'number') {
    consoleLogger.error('[app_worker] port should be number, but got %s(%s)', port, typeof port);
    exitProcess();
    return false;
  }
  const args = [ port ];
  if (listenConfig.hostname) {
    args.push(listenConfig.hostname);
  }
  debug('listen options %s', args);
  server.listen(...args);
  return true;
}

// SIGTERM to itself, so that graceful-process runs app.close() before the exit
function exitProcess() {
  process.exitCode = 1;
  process.kill(process.pid);
}
