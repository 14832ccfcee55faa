'use strict';

/**
 * Draining HTTP(S) servers before a worker exits: stop accepting, let the requests in flight
 * finish, and close keep-alive connections without cutting off a client's next request.
 *
 *   trackServer(server)          right after creating a server: follows its connections and
 *                                requests from then on (cheap: a Map entry per connection)
 *   requestsInFlight(servers)    how many requests are being served now
 *   drainServers(servers, opts)  drains; resolves { timedOut } once every connection is closed,
 *                                or when `timeout` ms have passed (the caller exits anyway)
 *
 * How a drain goes:
 *  - Each server stops accepting (the `net.Server` close: no new connection, a cluster worker
 *    tells the master it no longer listens). Not `http.Server#close()`: since Node 19 that also
 *    destroys every idle keep-alive connection at once, racing a client that is just sending
 *    its next request on one.
 *  - Every response whose headers have not gone out yet, and every response to a request that
 *    arrives from now on (on an existing connection, or on one still handed over, as in sticky
 *    mode), is sent with `Connection: close`; Node then closes that connection after it.
 *  - A connection with nothing in flight is closed once it has been idle for `idleGrace` ms
 *    (counted from when it became idle, or from the start of the drain if later), unless bytes
 *    arrived meanwhile: a request on its way, which then gets its `Connection: close` answer.
 *    A connection that has not sent a byte yet gets `freshGrace` instead: its client connected
 *    to send a request, and the kernel accepted it for this worker, which alone can answer it;
 *    a client whose process is starved of CPU may send it a second after its connect returned
 *    (one of 1,334 `Connection: close` requests was reset in a reload under load otherwise).
 *  - Upgraded connections (WebSocket...) are the app's: the drain does not wait for them.
 */

const net = require('net');
const tls = require('tls');

const kDrain = Symbol('egg-cluster-rs:drain');

/**
 * Start following a server's connections and requests (idempotent)
 * @param {net.Server} server - an http or https server, before it gets connections
 */
function trackServer(server) {
  if (server[kDrain]) return;
  const state = {
    server,
    conns: new Map(), // socket -> { socket, responses: Set, idleSince, bytesAtIdle }
    draining: false,
    onChange: null, // set while draining
  };
  server[kDrain] = state;

  const changed = () => {
    if (state.onChange) state.onChange();
  };
  const track = socket => {
    let conn = state.conns.get(socket);
    if (!conn) {
      conn = { socket, responses: new Set(), idleSince: Date.now(), bytesAtIdle: socket.bytesRead };
      state.conns.set(socket, conn);
      socket.once('close', () => {
        state.conns.delete(socket);
        changed();
      });
      changed();
    }
    return conn;
  };

  // https: requests come on the TLS socket, which 'secureConnection' gives
  server.on(server instanceof tls.Server ? 'secureConnection' : 'connection', track);
  // first, so that the app's own listener (which may answer at once) sees it done
  server.prependListener('request', (req, res) => {
    const conn = track(req.socket);
    conn.responses.add(res);
    if (state.draining) res.shouldKeepAlive = false;
    res.once('close', () => {
      conn.responses.delete(res);
      if (conn.responses.size === 0) {
        conn.idleSince = Date.now();
        conn.bytesAtIdle = req.socket.bytesRead;
      }
      changed();
    });
  });
}

/**
 * @param {net.Server[]} servers - tracked servers
 * @return {number} requests being served
 */
function requestsInFlight(servers) {
  let n = 0;
  for (const state of states(servers)) {
    for (const conn of state.conns.values()) n += conn.responses.size;
  }
  return n;
}

/**
 * Drain the servers (see above)
 * @param {net.Server[]} servers - tracked servers (the same server twice counts once)
 * @param {Object} [opts] -
 * @param {number} [opts.timeout] - give up after this many ms (default 5000)
 * @param {number} [opts.idleGrace] - how long an idle keep-alive connection is left open (default 500)
 * @param {number} [opts.freshGrace] - how long a connection that sent nothing yet is left open (default 3000)
 * @return {Promise<{timedOut: boolean}>} -
 */
function drainServers(servers, { timeout = 5000, idleGrace = 500, freshGrace = 3000 } = {}) {
  const list = states(servers);
  const start = Date.now();
  return new Promise(resolve => {
    let done = false;
    let sweepTimer = null;
    let sweepSoon = null;
    const giveUp = setTimeout(() => finish(true), timeout);

    function finish(timedOut) {
      if (done) return;
      done = true;
      clearTimeout(giveUp);
      clearTimeout(sweepTimer);
      clearImmediate(sweepSoon);
      for (const state of list) state.onChange = null;
      resolve({ timedOut });
    }

    // A response or a connection closed, a connection came, or a grace ran out: look again,
    // once per loop turn, in its check phase. The sweep runs after the loop has polled, so bytes
    // of a request that reached the kernel meanwhile are read (bytesRead moved, or the request
    // is being served): a sweep run by the grace's timer, before the poll, would close the
    // connection with them unread and answer the client with a reset. What is left is the race
    // every keep-alive server has: a request still on the wire.
    function changed() {
      if (!sweepSoon) sweepSoon = setImmediate(sweep);
    }

    // Closes what is due, and either finishes or schedules the next look.
    function sweep() {
      clearTimeout(sweepTimer);
      clearImmediate(sweepSoon);
      sweepTimer = sweepSoon = null;
      if (done) return;
      const now = Date.now();
      let pending = 0;
      let next = Infinity;
      for (const state of list) {
        for (const conn of state.conns.values()) {
          const { socket } = conn;
          if (conn.responses.size > 0) {
            pending++;
            continue;
          }
          if (!socket.parser && !socket.destroyed) {
            // upgraded (or otherwise taken from the HTTP server): no longer ours to close
            state.conns.delete(socket);
            continue;
          }
          pending++;
          if (socket.destroyed) continue; // its 'close' is on the way
          if (socket.bytesRead !== conn.bytesAtIdle) {
            // a request is arriving: it will get Connection: close; look again later
            conn.bytesAtIdle = socket.bytesRead;
            conn.idleSince = now;
          }
          const grace = socket.bytesRead === 0 ? Math.max(idleGrace, freshGrace) : idleGrace;
          const due = Math.max(conn.idleSince, start) + grace;
          if (due <= now) {
            socket.destroy();
          } else {
            next = Math.min(next, due);
          }
        }
      }
      if (pending === 0) {
        finish(false);
      } else if (next !== Infinity) {
        sweepTimer = setTimeout(changed, next - now);
      }
    }

    for (const state of list) {
      state.draining = true;
      state.onChange = changed;
      // stop accepting (no-op when not listening)
      net.Server.prototype.close.call(state.server);
      for (const conn of state.conns.values()) {
        for (const res of conn.responses) {
          if (!res.headersSent) res.shouldKeepAlive = false;
        }
      }
    }
    sweep();
  });
}

function states(servers) {
  const out = new Set();
  for (const server of servers) {
    if (server && server[kDrain]) out.add(server[kDrain]);
  }
  return [ ...out ];
}

module.exports = { trackServer, requestsInFlight, drainServers };
