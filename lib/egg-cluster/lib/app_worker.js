'use strict';

// egg-cluster-rs's app worker, started from this path so that `egg-scripts stop` (3.x), which
// looks for leftover workers whose command line has `egg-cluster/lib/app_worker.js`, finds ours.
require('../../app_worker');
