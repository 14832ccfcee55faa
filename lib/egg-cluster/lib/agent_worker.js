'use strict';

// egg-cluster-rs's agent worker, started from this path so that `egg-scripts stop` (3.x), which
// looks for leftover workers whose command line has `egg-cluster/lib/agent_worker.js`, finds ours.
require('../../agent_worker');
