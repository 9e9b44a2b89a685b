import '../../lib/local/polyfill.js';
