'use strict';

// bench/heartbeat.js's isolated child: a bare Node process running only lib/heartbeat.js (as a
// worker script does first thing), with whatever EGG_CLUSTER_RS_HEARTBEAT / _HANG_REPORT the
// driver gave it, kept alive and otherwise idle.
require('../../lib/heartbeat')();
setInterval(() => {}, 1 << 30);
