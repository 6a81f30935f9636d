// The graphscript bench server: the seed's own SSEbackend from the npm
// package graphscript (its Node build, dist/index.node.js, which bundles
// the better-sse it was built with), set up as the seed's docs show:
// openSSE({server, path}) on a Node http server, then send(message) to all
// sessions and send(message, undefined, sessionId) to one.
//
// Run: node bench/servers/graphscript_server.js [--port 0]
'use strict';
const http = require('http');
const { SSEbackend } = require('graphscript/dist/index.node.js');
const common = require('./_common');

const opts = common.args();
let sse = null;

// Requests whose URL does not contain the SSE path reach this listener;
// graphscript takes the rest.
const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url.split('?')[0] === '/control') {
    common.control(req, res, {
      broadcast: (data) => sse.send(data),
      targeted: (size) => {
        for (const id of Object.keys(sse.sessions)) sse.send(common.payload(size), undefined, id);
      },
      count: () => Object.keys(sse.sessions).length,
    });
  } else {
    res.writeHead(404);
    res.end();
  }
});

const backend = new SSEbackend();
sse = backend.openSSE({ server, path: '/sse' });
common.listen(server, opts);
