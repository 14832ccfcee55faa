'use strict';

// mocha root hooks (loaded through .mocharc.yml `require`)
const helper = require('./helper');

exports.mochaHooks = {
  async afterEach() {
    await helper.cleanupAll();
  },
  afterAll() {
    if (!process.env.EGG_CLUSTER_RS_TEST_KEEP) helper.removeTmp();
  },
};
