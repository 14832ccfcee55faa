'use strict';

const { Controller } = require('egg');

class HomeController extends Controller {
  async index() {
    this.ctx.body = 'hi, egg-cluster-rs';
  }

  async pid() {
    this.ctx.body = String(process.pid);
  }
}

module.exports = HomeController;
