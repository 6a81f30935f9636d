// What the Node bench servers share: the payload, the command line, the
// control body reader and the listening step (see _common.py for the
// control protocol; it is the same for every server).
'use strict';

function payload(size) {
  // process.hrtime is CLOCK_MONOTONIC on Linux: the same clock as Python's
  // time.monotonic_ns() and the C client's clock_gettime.
  const t = Number(process.hrtime.bigint());
  const pad = size - 15 - String(t).length;
  return { t, pad: 'x'.repeat(pad > 0 ? pad : 0) };
}

function args() {
  const out = { host: '127.0.0.1', port: 0, backlog: 4096 };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    out[key] = key === 'host' ? argv[i + 1] : Number(argv[i + 1]);
  }
  return out;
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(parts).toString()));
      } catch (e) {
        reject(e);
      }
    });
    req.on('error', reject);
  });
}

function answer(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

// scenario runner: `broadcast()` sends one event to every stream,
// `targeted()` one event to each session by id.
function control(req, res, { broadcast, targeted, count }) {
  readJson(req).then((body) => {
    const size = Number(body.size || 64);
    switch (body.scenario) {
      case 'burst': {
        const n = Number(body.count || 20);
        for (let i = 0; i < n; i++) broadcast(payload(size));
        break;
      }
      case 'sustained': {
        const rate = Number(body.rate || 5);
        const ticks = Math.floor(rate * Number(body.duration || 5));
        const start = performance.now();
        let sent = 0;
        const tick = () => {
          broadcast(payload(size));
          sent++;
          if (sent < ticks) setTimeout(tick, Math.max(0, start + (sent * 1000) / rate - performance.now()));
        };
        tick();
        break;
      }
      case 'targeted':
        targeted(size);
        break;
      default:
        return answer(res, 400, { ok: false });
    }
    answer(res, 200, { ok: true, sessions: count() });
  }, () => answer(res, 400, { ok: false }));
}

function listen(server, opts) {
  server.listen({ host: opts.host, port: opts.port, backlog: opts.backlog }, () => {
    process.stdout.write(`READY ${server.address().port}\n`);
  });
}

module.exports = { payload, args, control, listen };
