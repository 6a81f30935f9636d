#!/usr/bin/env node
// A publisher in another language: Node's built-in fetch (Node 18 or newer)
// and the server API, nothing else.
//
// Run it against a server started with an API key, for instance
//
//     twistd -n graphsse --port 8080 --channels news --history 100 --api-key KEY
//     node examples/publisher.mjs --url http://127.0.0.1:8080/api --key KEY --channel news --count 10
//
// The URL and the key may come from GRAPHSSE_URL and GRAPHSSE_API_KEY
// instead (which keeps the key out of ps).  It publishes COUNT events,
// {"n": 1, "from": "node"} and so on, one after the other, each once the
// server has acknowledged the one before, and prints each answer's JSON
// ({"id": ...}) on its own line.  A refusal prints the server's JSON error on
// stderr and exits 1; a bad command line exits 2.

import { parseArgs } from "node:util";

function usage(message) {
  console.error(
    JSON.stringify({ error: { code: "usage", message } }) +
      "\nusage: node publisher.mjs --url URL --key KEY [--channel news]" +
      " [--count 10] [--event NAME]",
  );
  process.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      url: { type: "string", default: process.env.GRAPHSSE_URL },
      key: { type: "string", default: process.env.GRAPHSSE_API_KEY },
      channel: { type: "string", default: "news" },
      count: { type: "string", default: "10" },
      event: { type: "string" },
    },
  }));
} catch (error) {
  usage(error.message);
}

const count = Number(values.count);
if (!values.url) usage("the API's URL is needed: --url or GRAPHSSE_URL");
if (!values.key) usage("an API key is needed: --key or GRAPHSSE_API_KEY");
if (!Number.isInteger(count) || count < 1) usage(`not a count: ${values.count}`);

const endpoint = `${values.url.replace(/\/+$/, "")}/publish`;

async function publish(data) {
  const body = { channel: values.channel, data };
  if (values.event) body.event = values.event;
  const response = await fetch(endpoint, {
    method: "POST",
    headers: {
      Authorization: `apikey ${values.key}`,
      "Content-Type": "application/json",
      Accept: "application/json",
    },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) {
    console.error(text || JSON.stringify({ error: { code: "http_error" } }));
    process.exit(1);
  }
  return text;
}

try {
  for (let n = 1; n <= count; n++) {
    console.log(await publish({ n, from: "node" }));
  }
} catch (error) {
  // No answer at all: the server cannot be reached.
  const message = `${endpoint}: ${error.cause?.message ?? error.message}`;
  console.error(JSON.stringify({ error: { code: "no_answer", message } }));
  process.exit(3);
}
