'use strict';

/**
 * The autocannon fallback, run as a child process by loadgen.js:
 *
 *   node autocannon-run.js '{"url":..., "connections":64, "durationS":5, "close":true}'
 *
 * prints autocannon's result object as JSON. With `close`, requests carry `Connection: close`
 * and every request goes on a new connection. autocannon 9's CLI gets that only half right: after
 * each response it writes the next request on the socket the server is closing (a write the
 * server never answers, which also skews its latency figures), and reconnects on 'end' (and
 * `reconnectRate: 1` records no response at all). So here a socket carries one request: the next
 * one is sent by the reconnect that the server's close triggers.
 */

const path = require('path');

const o = JSON.parse(process.argv[2]);
const main = require.resolve('autocannon');
const autocannon = require(main);

if (o.close) {
  const Client = require(path.join(path.dirname(main), 'lib', 'httpClient.js'));
  const doRequest = Client.prototype._doRequest;
  if (typeof doRequest !== 'function' || typeof Client.prototype._connect !== 'function') {
    throw new Error('autocannon internals changed: cannot open a connection per request');
  }
  Client.prototype._doRequest = function() {
    // this socket has had its request: the server closes it, and the 'end' handler's
    // _connect() sends the next request on a new socket
    if (this.conn && this.conn.benchUsed) return;
    if (this.conn) this.conn.benchUsed = true;
    return doRequest.apply(this, arguments);
  };
}

autocannon({
  url: o.url,
  connections: o.connections,
  duration: o.durationS,
  headers: o.close ? { connection: 'close' } : {},
  // a bounded load (requests/s over all connections), e.g. for the reload figure
  ...(o.rate ? { overallRate: o.rate } : {}),
}, (err, result) => {
  if (err) {
    console.error(err && err.stack || err);
    process.exit(1);
  }
  process.stdout.write(JSON.stringify(result));
});
