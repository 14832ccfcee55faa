'use strict';

/**
 * What the egg 3 and egg 4 app workers (lib/app_worker.js, lib/egg4/app_worker.js) share once
 * the Application exists: where to listen, the server(s), the sticky hand-over, the drain on
 * stop. `options` is the worker's argv[2], `consoleLogger` its console logger.
 * @param {Object} options -
 * @param {Object} consoleLogger -
 * @return {Object} { listenSettings, startServer, drain, exitProcess }
 */
module.exports = function appServer(options, consoleLogger) {
  const os = require('os');
  const fs = require('fs');
  const { trackServer, requestsInFlight, drainServers } = require('./drain');
  const { sigtermSelf } = require('./self');
  const { trackRequests } = require('./child_stats');
  const debug = require('util').debuglog('egg-cluster:app_worker');

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
   * Create the server(s), listen, then report the listen with `onListening(server, listen)`
   * (each egg major tells the master in its own words)
   * @param {Object} app -
   * @param {Object} listen - listenSettings()
   * @param {Function} onListening -
   * @return {net.Server[]} the servers it listens with
   */
  function startServer(app, listen, onListening) {
    const { server, debugPortServer } = createServers(app, listen.https);
    trackServer(server);
    if (debugPortServer) trackServer(debugPortServer);
    countRequests(server, debugPortServer);

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

    server.once('listening', () => onListening(server, listen));
    return servers;
  }

  /**
   * The app's server, and the plain HTTP one for `options.debugPort`: a server of its own, also
   * when the app is plain HTTP. (egg-cluster 2.x and @eggjs/cluster up to 4.0.2-beta.9 listen the
   * app's server a second time there: a server listens once, and the worker ended up on the debug
   * port alone, the app's port never listening.)
   * @param {Object} app -
   * @param {Object} [https] - https options, with file paths
   * @return {Object} { server, debugPortServer }
   */
  function createServers(app, https) {
    const debugPortServer = options.debugPort ? require('http').createServer(app.callback()) : null;
    if (https) {
      const tlsOptions = Object.assign({}, https, {
        key: fs.readFileSync(https.key),
        cert: fs.readFileSync(https.cert),
        ca: https.ca && fs.readFileSync(https.ca),
      });
      return { server: require('https').createServer(tlsOptions, app.callback()), debugPortServer };
    }
    return { server: require('http').createServer(app.callback()), debugPortServer };
  }

  /**
   * The request metrics the heartbeat carries (lib/child_stats.js), of every server the worker
   * serves with: before the app's own listeners, so that a response sent at once is counted.
   * @param {...Object} servers - http(s) servers (null ones are skipped)
   */
  function countRequests(...servers) {
    for (const server of servers) trackRequests(server);
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

  // graceful-process runs app.close() before the exit
  function exitProcess() {
    sigtermSelf();
  }

  return { listenSettings, startServer, drain, exitProcess };
};
