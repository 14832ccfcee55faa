'use strict';

module.exports = agent => {
  agent.messenger.on('egg-ready', () => {
    agent.logger.info('[example] agent %s ready, app workers: %j', process.pid, agent.messenger.opids);
  });
};
