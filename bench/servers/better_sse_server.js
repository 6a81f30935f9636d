// The better-sse bench server: better-sse (the library graphscript's
// SSEbackend is built on) on Node's http module, as its docs show it: one
// Channel that every session registers with, channel.broadcast() for
// broadcasts and session.push() for targeted events.
//
// Run: node bench/servers/better_sse_server.js [--port 0]
'use strict';
const http = require('http');
const { createSession, createChannel } = require('better-sse');
const common = require('./_common');

const opts = common.args();
const channel = createChannel();
const sessions = new Map();
let nextId = 0;

const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'GET' && path === '/sse') {
    createSession(req, res).then((session) => {
      channel.register(session);
      const id = `s${++nextId}`;
      sessions.set(id, session);
      session.once('disconnected', () => sessions.delete(id));
    });
  } else if (req.method === 'POST' && path === '/control') {
    common.control(req, res, {
      broadcast: (data) => channel.broadcast(data),
      targeted: (size) => {
        for (const id of Array.from(sessions.keys())) {
          const session = sessions.get(id);
          if (session && session.isConnected) session.push(common.payload(size));
        }
      },
      count: () => sessions.size,
    });
  } else {
    res.writeHead(404);
    res.end();
  }
});
common.listen(server, opts);
