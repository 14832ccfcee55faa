#!/usr/bin/env node
'use strict';
// Usage: node scripts/check-glibc.js <file.node> [baseline, default 2.17]
// Fails naming every dynamic symbol that needs a glibc newer than the baseline (the oldest glibc
// the binary must load on), and always prints the newest version the file needs.
const { execFileSync } = require('node:child_process');

const [file, baseline = '2.17'] = process.argv.slice(2);
if (!file) {
  console.error('usage: node scripts/check-glibc.js <file.node> [baseline]');
  process.exit(2);
}

const cmp = (a, b) => {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] || 0) - (y[i] || 0);
    if (d) return d;
  }
  return 0;
};

let dump;
try {
  dump = execFileSync('objdump', [ '-T', file ], { encoding: 'utf8', maxBuffer: 64 << 20 });
} catch (err) {
  const cause = err.code === 'ENOENT' ? 'objdump is not installed (apt-get install binutils)' : err.message;
  console.error(`check-glibc: cannot read the symbols of ${file}: ${cause}`);
  process.exit(2);
}

// objdump -T: "... DF *UND*  0000000000000000 (GLIBC_2.28) fcntl64"; a versioned reference is
// either an import (*UND*) or a default version of a definition, both count.
const needs = [];
for (const line of dump.split('\n')) {
  const m = /\(?GLIBC_(\d+(?:\.\d+)+)\)?\s+(\S+)\s*$/.exec(line);
  if (m) needs.push({ version: m[1], symbol: m[2] });
}
if (!needs.length) {
  console.error(`check-glibc: ${file} has no GLIBC-versioned symbols (not a glibc build?)`);
  process.exit(2);
}
const newest = needs.reduce((a, b) => (cmp(b.version, a.version) > 0 ? b : a));
const tooNew = needs.filter(n => cmp(n.version, baseline) > 0)
  .sort((a, b) => cmp(b.version, a.version) || a.symbol.localeCompare(b.symbol));
console.log(`check-glibc: ${file}: newest needed GLIBC_${newest.version} (${newest.symbol}); baseline GLIBC_${baseline}`);
if (tooNew.length) {
  for (const n of tooNew) console.error(`  ${n.symbol} needs GLIBC_${n.version}`);
  console.error(`check-glibc: ${tooNew.length} symbol(s) newer than GLIBC_${baseline}: build with scripts/build-release-gnu.sh (napi-rs cross toolchain, glibc 2.17)`);
  process.exit(1);
}
