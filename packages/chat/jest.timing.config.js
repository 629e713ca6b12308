module.exports = require('../../jest.timing.js')(require('./jest.config.js'));
