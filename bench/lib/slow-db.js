'use strict';

/**
 * The large bench app's database: a TCP server on 127.0.0.1 that answers each `<who> <ms>\n`
 * with `ok\n` after <ms>, as MySQL or Redis keeps a booting agent waiting on I/O (the large
 * app's agent and app workers connect to it in their `didLoad`, bench/fixtures/large). It
 * counts what it answered, so the bench can tell the wait happened.
 */

const net = require('net');

async function startSlowDb() {
  const sockets = new Set();
  const counts = {};
  const server = net.createServer(socket => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    socket.setEncoding('utf8');
    socket.on('data', d => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const [ who, ms ] = buf.slice(0, nl).split(' ');
      buf = buf.slice(nl + 1);
      const timer = setTimeout(() => {
        counts[who] = (counts[who] || 0) + 1;
        socket.end('ok\n');
      }, Math.min(Number(ms) || 0, 60000));
      socket.on('close', () => clearTimeout(timer));
    });
  });
  await new Promise((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  return {
    address: `127.0.0.1:${server.address().port}`,
    counts,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise(resolve => server.close(() => resolve()));
    },
  };
}

module.exports = { startSlowDb };
