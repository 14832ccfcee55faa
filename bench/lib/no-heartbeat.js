'use strict';

// bench/heartbeat.js's "off" variant: preloaded (NODE_OPTIONS=--require) into every process of
// the tree, it takes away the interval the master gives its children, so lib/heartbeat.js starts
// neither its timer nor the event-loop delay monitor. Only meaningful with
// EGG_CLUSTER_RS_WORKER_TIMEOUT=0: otherwise the master would find the silent workers hung.
delete process.env.EGG_CLUSTER_RS_HEARTBEAT;
