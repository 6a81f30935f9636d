/**
 * graphsse: the browser client of txgraphsse, a port of graphscript's SSE
 * backend to Twisted.
 *
 * One `EventSource` carries the server's messages; `fetch` POSTs to the same
 * URL carry the client's.  The wire format is PROTOCOL.md's.  No dependencies
 * and no build step: this file is an ES module as it is, and
 * `build_classic.py` derives `graphsse.classic.js` (one global, `GraphSSE`)
 * from it.
 *
 *     import { openSSE } from "/events/client.js";
 *     const sse = openSSE({ url: "/events", routes: { hello: (n) => `hi ${n}` } });
 *     await sse.ready;
 *     console.log(await sse.run("add", [1, 2]));
 *
 * With `getToken` (a function that returns a token, or a Promise of one),
 * the client keeps its credentials fresh as the Python client's TokenKeeper
 * does: it asks before the stream opens, puts the token in the stream's URL
 * (`?token=`: an EventSource cannot send headers) and in every POST's
 * `Authorization: Bearer`, asks again shortly before the token's `exp` (read
 * from the JWT unverified: the server checks) and POSTs `refreshToken` so
 * that the same stream carries on.  Each new stream (after an `expired`
 * event, or when the browser's own reconnection would carry a token that is
 * no longer the one to use) is opened by the client itself with a fresh
 * token and the last event id.
 *
 * With `shared: true` the tabs of one origin that open the same endpoint
 * share one stream (a browser allows six HTTP/1.1 connections per host, so
 * a seventh tab of an app that holds a stream per tab would stall).  A Web
 * Lock elects the tab that holds the `EventSource`; it hands every event on
 * through a `BroadcastChannel` and asks for the channels of every tab; each
 * server call on the session runs in the tab that registered its route
 * first; every tab POSTs its own calls, naming the shared session.  When the
 * leader goes (closed, frozen, put in the back/forward cache) the lock passes
 * to the next tab, which resumes from the earliest last event id of the tabs
 * left; each tab drops an event whose id it has already seen.  See
 * `TabGroup`.
 *
 * @module graphsse
 */

const JSON_TYPE = "application/json";
const CLOSED = 2; // EventSource.CLOSED
const DEFAULT_RETRY_MS = 5000;
const MAX_RETRY_MS = 60000;
// Statuses after which reconnecting cannot help: 204 is the server's "do not
// reconnect"; the others refuse the request itself (auth, channels, path).
const FINAL_STATUSES = [204, 400, 401, 403, 404, 410];
const OPEN = 1; // EventSource.OPEN
// A token is renewed this share of its remaining life before its `exp`,
// within these bounds (the Python client's TokenKeeper: margin, least, most).
const TOKEN_MARGIN = 0.1;
const TOKEN_LEAST_MS = 1000;
const TOKEN_MOST_MS = 60000;
// setTimeout's longest delay; a longer one would fire at once.
const MAX_TIMER_MS = 2 ** 31 - 1;
// The stream's own events, whatever the tabs ask for.
const STREAM_EVENTS = ["message", "reset", "shutdown", "expired", "left"];
// A shared stream: how long a new leader waits for the other tabs' states,
// how often it looks for tabs that went without a word (their lock is gone),
// how many events each tab keeps (to order ids, and for a tab that comes
// back) and how many ids it remembers to drop what it has seen.
const SHARED_WAIT_MS = 300;
const SHARED_PRUNE_MS = 2000;
const SHARED_LOG = 512;
const SHARED_SEEN = 4096;
// How long the leader gathers tabs that join before it widens the stream.
const SHARED_WIDEN_MS = 50;

let lastCallback = 0;

/** @returns {number} milliseconds since the epoch, finer than `Date.now()` */
function now() {
  return performance.timeOrigin + performance.now();
}

/**
 * A fresh id for one of our requests, unlike any route name.
 * @returns {string}
 */
function newCallbackId() {
  lastCallback += 1;
  return `gsse.${lastCallback}.${Math.random().toString(36).slice(2, 10)}`;
}

/**
 * The value an event's text stands for: JSON if it parses, else the text.
 * @param {unknown} text
 * @returns {any}
 */
function parse(text) {
  if (typeof text !== "string") return text;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * The positional arguments `args` stands for: an array is spread, null or
 * absent means none, any other value is one argument.
 * @param {any} args
 * @returns {any[]}
 */
function spread(args) {
  if (args === null || args === undefined) return [];
  return Array.isArray(args) ? args : [args];
}

/**
 * When JWT `token` expires (its `exp`, in milliseconds since the epoch),
 * read without checking its signature; null if it is not a JWT with an `exp`.
 * @param {string} token
 * @returns {number | null}
 */
function tokenExpiry(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
    const exp = JSON.parse(new TextDecoder().decode(bytes))?.exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * @param {string} message
 * @param {number} status
 * @param {string} code
 * @param {unknown} [cause]
 * @returns {GraphSSEError}
 */
function failure(message, status, code, cause) {
  const error = /** @type {GraphSSEError} */ (new Error(message, { cause }));
  error.status = status;
  error.code = code;
  return error;
}

/**
 * The HTTP status of each error code of PROTOCOL.md's table: a batch's
 * answers carry the code alone.
 * @type {Record<string, number>}
 */
const STATUS_OF = {
  bad_json: 400,
  bad_message: 400,
  bad_channel: 400,
  unauthorized: 401,
  forbidden: 403,
  no_route: 404,
  no_session: 404,
  method_not_allowed: 405,
  not_pending: 409,
  too_large: 413,
  bad_content_type: 415,
  rate_limited: 429,
  route_failed: 500,
  unavailable: 503,
};

/**
 * A promise with its settling functions; its rejection alone is no error.
 * @template T
 * @returns {{promise: Promise<T>, resolve: (value: T) => void, reject: (reason: unknown) => void}}
 */
function deferred() {
  let resolve = /** @type {(value: T) => void} */ (() => {});
  let reject = /** @type {(reason: unknown) => void} */ (() => {});
  const promise = new Promise((yes, no) => {
    resolve = yes;
    reject = no;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/**
 * The Error for a refused request: the server's JSON error when it sent one.
 * @param {Response} response
 * @returns {Promise<GraphSSEError>}
 */
async function refusal(response) {
  let body = null;
  try {
    body = JSON.parse(await response.text());
  } catch {
    // not our JSON: a proxy's page, or no body at all
  }
  const error = body && typeof body === "object" ? body.error : null;
  const closed = response.status === 204;
  const code = typeof error?.code === "string" ? error.code : closed ? "closed" : "http_error";
  const message =
    typeof error?.message === "string"
      ? error.message
      : closed
        ? "the server closed the stream for good"
        : `HTTP ${response.status}`;
  return failure(message, response.status, code);
}

/**
 * Milliseconds a Retry-After header asks for (seconds or an HTTP date).
 * @param {string | null} value
 * @returns {number | null}
 */
function retryAfterMs(value) {
  if (!value) return null;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - Date.now());
}

/**
 * @typedef {Error & {status: number, code: string}} GraphSSEError
 * An Error for a refused or failed POST: `status` is the HTTP status (0 when
 * the network failed) and `code` the server's machine word (`no_route`,
 * `forbidden`, ...).
 */

/**
 * @typedef {object} Subscription One of our subscriptions to a server route.
 * @property {any} args
 * @property {number | null} id the number `subscribe` gave
 * @property {number | null} sub the server's number now (new after a reconnection)
 * @property {Promise<number>} promise
 * @property {Set<(value: any) => void>} callbacks
 */

/**
 * @typedef {(this: GraphSSE, ...args: any[]) => any} Route
 * A browser route the server may run: its `args` are spread as PROTOCOL.md
 * says; it may return a Promise.  An object of such functions is a route
 * whose functions the server picks by `method`.
 */

/**
 * @typedef {object} GraphSSEOptions
 * @property {string} url The endpoint: GET opens the stream, POST calls.
 * @property {string[]} [channels] Channels to join (`?channels=a,b`).
 * @property {Record<string, Route | Record<string, Route>>} [routes]
 *   Browser routes the server can call.
 * @property {Record<string, (data: any, event: Event, sse: GraphSSE) => void>} [events]
 *   Handlers of named events (a channel's events are named after it);
 *   `data` is the parsed JSON, or the text.
 * @property {(data: any, event: MessageEvent, sse: GraphSSE) => void} [onmessage]
 *   Application data: every `message` event that is not a framework message,
 *   and the events of a joined channel that `events` does not handle.
 * @property {(event: Event, sse: GraphSSE) => void} [onopen] Each (re)connection.
 * @property {(error: Event | GraphSSEError, sse: GraphSSE) => void} [onerror]
 *   A stream error (an Event), or an Error of a POST nobody awaits (a reply
 *   or update the server refused, a route that failed).
 * @property {(reason: GraphSSEError | undefined, sse: GraphSSE) => void} [onclose]
 *   The handle stopped for good: `terminate()` (no reason) or a refusal that
 *   reconnecting cannot help.
 * @property {(sessionId: string, sse: GraphSSE) => void} [onsession]
 *   A session opened (again, after a reconnection the id is new).
 * @property {(info: {lastEventId: string | null}, sse: GraphSSE) => void} [onreset]
 *   The server could not replay everything since `lastEventId`: events were missed.
 * @property {(args: any, sse: GraphSSE) => void} [onshutdown]
 *   The server is shutting down; the client reconnects when it can.
 * @property {() => string | Promise<string>} [getToken] Where the client's
 *   tokens come from: asked before the stream opens, shortly before each
 *   token's `exp`, and before a reconnection that needs a fresh one.  The
 *   token goes in the stream's URL (`?token=`) and in every POST
 *   (`Authorization: Bearer`).
 * @property {(channel: string, sse: GraphSSE) => void} [onleft] A refreshed
 *   token no longer allows `channel`: the stream left it, and later streams
 *   do not ask for it.
 * @property {(args: any, sse: GraphSSE) => void} [onexpired] The server
 *   ended the stream at its token's expiry; with `getToken`, the client
 *   reconnects at once with a fresh token.
 * @property {boolean | string} [shared=false] Share one stream with the
 *   other tabs of this origin that open the same endpoint with `shared`
 *   (a string names the group: tabs of different groups do not share).  The
 *   session is then the browser's, not the tab's: see the README.  Without
 *   Web Locks or BroadcastChannel the tab opens a stream of its own.
 * @property {boolean} [withCredentials] Send cookies cross-origin (stream and POSTs).
 * @property {string} [lastEventId] Resume after this event id.
 * @property {Record<string, string>} [headers] Extra headers for every POST.
 * @property {number} [retryDelay=5000] Milliseconds to wait after a refusal
 *   that names no Retry-After; doubled on each failure.
 * @property {number} [maxRetryDelay=60000] Cap of that backoff.
 * @property {typeof EventSource} [EventSource] An EventSource implementation
 *   (default: the global one).
 * @property {typeof fetch} [fetch] A fetch implementation (default: the global one).
 */

/**
 * @typedef {object} StreamItem One event of the stream, as the leader hands it on.
 * @property {string} type the event's name
 * @property {string} data its data, as text
 * @property {string} lastEventId the stream's last event id with it
 * @property {string | null} id its own id (null: it came without one)
 * @property {string | null} [token] with `setId`: the token the new session is under
 */

/**
 * @typedef {object} TabState What a tab of a shared stream tells the others.
 * @property {string[]} channels the channels it asked for
 * @property {string[]} events the names of the events it handles
 * @property {[string, number][]} routes its browser routes, each with when
 *   it registered it (milliseconds since the epoch)
 * @property {Record<string, number | null>} subs its subscriptions to server
 *   routes: the server's number of each
 * @property {string} lastEventId the last event id it saw
 */

/**
 * @typedef {object} TabHost What a TabGroup needs of its GraphSSE.
 * @property {() => TabState} state
 * @property {(item: StreamItem, run: boolean, event?: MessageEvent) => void} deliver
 *   Handle an event: `run` if it is a call this tab is to answer.
 * @property {(resumeId: string | null) => void} lead Open the shared stream
 *   (on the group's channels), after `resumeId` if not null.
 * @property {() => void} widen The group's channels grew: open the stream again.
 * @property {(name: string) => void} listen Hear events named `name` too.
 * @property {() => void} follow The stream is opening elsewhere: wait for its session.
 * @property {() => {sessionId: string | null, token: string | null, open: boolean}} session
 * @property {(message: any) => void} control The leader says the stream
 *   opened, was lost, reopens, is under a new token, or closed for good.
 * @property {() => void} abdicate Stop holding the stream.
 * @property {(route: string, sub: number | null) => void} unsubscribe End a
 *   subscription of a tab that left.
 */

/**
 * One tab's part in a shared stream (`shared: true`): the tabs of an origin
 * that open the same endpoint elect with a Web Lock the one that holds the
 * `EventSource` (the leader); it hands each event on through a
 * `BroadcastChannel`, asks for the union of the tabs' channels, and sends
 * each server call on the session to the tab that registered the route
 * first.  Each tab holds a lock of its own too, so that the leader can tell
 * which tabs are alive (`navigator.locks.query`).
 *
 * It owns the election, the tabs' registry and dropping an event seen
 * twice (by its id); the stream, the calls and what an event means are its
 * GraphSSE's (the `TabHost`).
 */
class TabGroup {
  /** This tab's id in the group. */
  tab = `${Date.now().toString(36)}.${Math.random().toString(36).slice(2, 12)}`;
  /** @type {string | null} The leader's tab id, when known. */
  leader = null;
  /** Whether this tab holds the stream. */
  leading = false;
  /** @type {string[]} The shared stream's channels (as its leader said). */
  channels = [];
  /** @type {Map<string, TabState>} The other tabs, by id. */
  members = new Map();

  /** @type {string} */
  #key;
  /** @type {TabHost} */
  #host;
  /** @type {BroadcastChannel | null} */
  #channel = null;
  /** @type {Set<string>} ids of events seen, in the order seen (oldest first) */
  #seen = new Set();
  /** @type {StreamItem[]} the last events seen that have an id */
  #log = [];
  /** Whether `#log` has let old events go. */
  #trimmed = false;
  /** @type {Set<string>} channels the stream left: never asked for again */
  #gone = new Set();
  /** @type {AbortController | null} this tab's request for the leader's lock */
  #election = null;
  /** @type {(() => void) | null} ends this tab's leadership (releases the lock) */
  #abdicate = null;
  /** @type {(() => void) | null} releases this tab's own lock */
  #quit = null;
  /** @type {{waiting: Set<string>, done: () => void} | null} an election gathering the tabs */
  #gathering = null;
  /** @type {ReturnType<typeof setInterval> | null} */
  #pruner = null;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #widening = null;
  /** Whether the tab is away (frozen, hidden in the back/forward cache). */
  #away = false;
  #left = false;
  #onHide = () => this.#suspend();
  #onShow = (/** @type {Event} */ event) => {
    if (event.type === "resume" || /** @type {PageTransitionEvent} */ (event).persisted) this.#resume();
  };

  /**
   * Whether this browser can share a stream between tabs.
   * @returns {boolean}
   */
  static supported() {
    return typeof BroadcastChannel === "function" && typeof globalThis.navigator?.locks?.request === "function";
  }

  /**
   * Join the group `key` (the leader's lock and the channel's name).
   * @param {string} key
   * @param {TabHost} host
   */
  constructor(key, host) {
    this.#key = key;
    this.#host = host;
    globalThis.addEventListener?.("pagehide", this.#onHide);
    globalThis.addEventListener?.("pageshow", this.#onShow);
    globalThis.document?.addEventListener("freeze", this.#onHide);
    globalThis.document?.addEventListener("resume", this.#onShow);
    this.#join();
  }

  /** Open the channel, take this tab's own lock, say hello, stand for election. */
  #join() {
    const channel = new BroadcastChannel(this.#key);
    channel.onmessage = (event) => this.#heard(event.data);
    this.#channel = channel;
    const election = (this.#election = new AbortController());
    navigator.locks
      .request(`${this.#key}#${this.tab}`, () => {
        if (this.#channel !== channel) return undefined; // gone before it was granted
        this.#say({ t: "state", hello: true, state: this.#host.state() });
        navigator.locks
          .request(this.#key, { signal: election.signal }, () => this.#lead())
          .catch(() => {}); // aborted: the tab went away first
        return new Promise((resolve) => (this.#quit = () => resolve(undefined)));
      })
      .catch(() => {});
  }

  /**
   * Leave the group for good (`terminate`, a refusal that cannot be helped).
   */
  leave() {
    if (this.#left) return;
    this.#suspend();
    this.#left = true;
    globalThis.removeEventListener?.("pagehide", this.#onHide);
    globalThis.removeEventListener?.("pageshow", this.#onShow);
    globalThis.document?.removeEventListener("freeze", this.#onHide);
    globalThis.document?.removeEventListener("resume", this.#onShow);
  }

  /**
   * The tab goes away (closed, frozen, into the back/forward cache): a
   * leader lets the stream and the lock go; every tab says goodbye and
   * lets its own lock go, so that no call waits for it.
   */
  #suspend() {
    if (this.#away || this.#left) return;
    this.#away = true;
    if (this.leading) {
      this.#host.abdicate();
      this.#say({ t: "reopen" });
    }
    this.#stopLeading();
    this.#election?.abort();
    this.#election = null;
    this.#say({ t: "bye" });
    this.#quit?.();
    this.#quit = null;
    this.#channel?.close();
    this.#channel = null;
    this.leader = null;
    this.members.clear();
    this.#host.follow();
  }

  /** The tab is back: join again, as a follower at first. */
  #resume() {
    if (!this.#away || this.#left) return;
    this.#away = false;
    this.#join();
  }

  #stopLeading() {
    this.leading = false;
    if (this.#pruner !== null) clearInterval(this.#pruner);
    this.#pruner = null;
    if (this.#widening !== null) clearTimeout(this.#widening);
    this.#widening = null;
    this.#gathering?.done();
    this.#abdicate?.();
    this.#abdicate = null;
  }

  /**
   * This tab got the lock: gather the tabs' states (their channels, and
   * how far each has seen), then open the stream; hold the lock until the
   * tab goes.
   * @returns {Promise<void>}
   */
  async #lead() {
    if (this.#away || this.#left) return;
    const before = this.leader;
    this.leading = true;
    this.leader = this.tab;
    if (before !== null) this.members.delete(before);
    await this.#prune();
    const waiting = new Set(this.members.keys());
    if (waiting.size) {
      await new Promise((resolve) => {
        const timer = setTimeout(() => gathering.done(), SHARED_WAIT_MS);
        const gathering = (this.#gathering = {
          waiting,
          done: () => {
            clearTimeout(timer);
            if (this.#gathering === gathering) this.#gathering = null;
            resolve(undefined);
          },
        });
        this.#say({ t: "elect" });
      });
    } else {
      this.#say({ t: "elect" });
    }
    if (!this.leading) return;
    this.channels = []; // the stream opens again anyway: for the tabs left only
    this.channels = this.#union();
    const own = this.#host.state().lastEventId;
    this.#host.lead(this.#earliest([own, ...[...this.members.values()].map((state) => state.lastEventId)]));
    this.#pruner = setInterval(() => this.#prune(), SHARED_PRUNE_MS);
    await new Promise((resolve) => {
      this.#abdicate = () => resolve(undefined);
      if (!this.leading) resolve(undefined);
    });
  }

  /**
   * Forget the tabs whose own lock is gone: closed or crashed without a word.
   * @returns {Promise<void>}
   */
  async #prune() {
    let held;
    try {
      held = (await navigator.locks.query()).held ?? [];
    } catch {
      return;
    }
    const alive = new Set(held.map((lock) => lock.name));
    for (const [tab, state] of this.members) {
      if (!alive.has(`${this.#key}#${tab}`)) this.#drop(tab, state);
    }
  }

  /**
   * Tab `tab` left; the leader ends its subscriptions that no tab shares.
   * @param {string} tab
   * @param {TabState} state
   */
  #drop(tab, state) {
    this.members.delete(tab);
    this.#gathering?.waiting.delete(tab);
    if (this.#gathering && !this.#gathering.waiting.size) this.#gathering.done();
    if (!this.leading) return;
    for (const [route, sub] of Object.entries(state.subs ?? {})) {
      if (!this.subscribed(route)) this.#host.unsubscribe(route, sub);
    }
  }

  /**
   * Whether this tab or another subscribes to server route `route`.
   * @param {string} route
   * @param {boolean} [others] only another tab
   * @returns {boolean}
   */
  subscribed(route, others = false) {
    if (!others && Object.hasOwn(this.#host.state().subs, route)) return true;
    for (const state of this.members.values()) {
      if (Object.hasOwn(state.subs ?? {}, route)) return true;
    }
    return false;
  }

  /**
   * The channels the stream is to carry: every tab's, less those it left.
   * @returns {string[]}
   */
  #union() {
    const names = new Set(this.leading ? this.channels : []);
    for (const state of [this.#host.state(), ...this.members.values()]) {
      for (const name of state.channels ?? []) names.add(name);
    }
    return [...names].filter((name) => !this.#gone.has(name));
  }

  /**
   * Every event name a tab handles, and every channel: what the leader's
   * stream must listen to.
   * @returns {string[]}
   */
  names() {
    const names = new Set(this.channels);
    for (const state of [this.#host.state(), ...this.members.values()]) {
      for (const name of state.events ?? []) names.add(name);
    }
    return [...names];
  }

  /**
   * The earliest of `ids`, by the order this tab saw them in; ids it does
   * not know (or empty) do not count.  Null: none known.
   * @param {string[]} ids
   * @returns {string | null}
   */
  #earliest(ids) {
    let best = -1;
    for (const id of ids) {
      if (!id) continue;
      const index = this.#log.findIndex((item) => item.id === id);
      if (index !== -1 && (best === -1 || index < best)) best = index;
    }
    return best === -1 ? null : this.#log[best].id;
  }

  /**
   * The tab that answers calls of browser route `route`: the one that
   * registered it first (null: none has it).
   * @param {string} route
   * @returns {string | null}
   */
  owner(route) {
    /** @type {string | null} */
    let owner = null;
    let first = Infinity;
    const tabs = [[this.tab, this.#host.state()], ...this.members];
    for (const [tab, state] of /** @type {[string, TabState][]} */ (tabs)) {
      for (const [name, since] of state.routes ?? []) {
        if (name === route && (since < first || (since === first && owner !== null && tab < owner))) {
          owner = tab;
          first = since;
        }
      }
    }
    return owner;
  }

  /** Tell the others what this tab asks for now (its channels, routes, subscriptions). */
  announce() {
    this.#say({ t: "state", state: this.#host.state() });
    if (this.leading) this.#grown();
  }

  /**
   * The stream left `channel`: do not ask for it again.
   * @param {string} channel
   */
  left(channel) {
    this.#gone.add(channel);
    this.channels = this.channels.filter((name) => name !== channel);
  }

  /**
   * The leader hands on an event of its stream, and takes it itself.
   * @param {StreamItem} item
   * @param {MessageEvent} event
   */
  forward(item, event) {
    this.#say({ t: "item", item });
    this.#take(item, false, event);
  }

  /**
   * The leader hands a call to tab `to` (itself, maybe).
   * @param {string} to
   * @param {StreamItem} item
   * @param {MessageEvent} event
   */
  send(to, item, event) {
    if (to === this.tab) this.#host.deliver(item, true, event);
    else this.#say({ t: "call", to, item });
  }

  /**
   * The leader tells the tabs about its stream (`open`, `lost`, ...).
   * @param {any} message
   */
  tell(message) {
    if (this.leading) this.#say(message);
  }

  /**
   * An event, unless its id says this tab has seen it.
   * @param {StreamItem} item
   * @param {boolean} run
   * @param {MessageEvent} [event]
   */
  #take(item, run, event) {
    const id = item.id;
    if (id !== null && id !== undefined) {
      if (this.#seen.has(id)) return;
      this.#seen.add(id);
      if (this.#seen.size > SHARED_SEEN) this.#seen.delete(/** @type {string} */ (this.#seen.values().next().value));
      this.#log.push(item);
      if (this.#log.length > SHARED_LOG) {
        this.#log.shift();
        this.#trimmed = true;
      }
    }
    this.#host.deliver(item, run, event);
  }

  /** @param {any} message */
  #say(message) {
    try {
      this.#channel?.postMessage({ ...message, from: this.tab });
    } catch {
      // closed meanwhile
    }
  }

  /** @param {any} message */
  #heard(message) {
    if (this.#away || this.#left || !message || typeof message !== "object") return;
    const from = message.from;
    switch (message.t) {
      case "state":
        this.members.set(from, message.state);
        if (this.#gathering?.waiting.delete(from) && !this.#gathering.waiting.size) this.#gathering.done();
        if (this.leading) {
          if (message.hello) this.#welcome(from, message.state.lastEventId);
          this.#grown();
        }
        return;
      case "bye": {
        const state = this.members.get(from);
        if (state) this.#drop(from, state);
        return;
      }
      case "elect":
        if (from === this.tab) return;
        if (this.leader !== null && this.leader !== from) this.members.delete(this.leader);
        this.leader = from;
        this.#host.follow();
        this.#say({ t: "state", state: this.#host.state() });
        return;
      case "welcome":
        if (message.to !== this.tab || this.leading) return;
        this.leader = from;
        this.channels = message.channels;
        this.#host.control({ ...message, t: "welcome" });
        for (const item of message.replay ?? []) this.#take(item, false);
        if (message.reset) this.#host.control({ t: "reset" });
        return;
      case "item":
        if (this.leading) return;
        // Only the leader's word counts, but an event with an id is taken
        // from anyone (a leader's last events may come after its end).
        if (this.leader === null) this.leader = from;
        if (from === this.leader || message.item?.id) this.#take(message.item, false);
        return;
      case "call":
        if (message.to === this.tab) this.#host.deliver(message.item, true);
        return;
      default:
        if (from !== this.leader || this.leading) return;
        if (message.t === "open" || message.t === "reopen") this.channels = message.channels ?? this.channels;
        this.#host.control(message);
    }
  }

  /**
   * A tab joined (or came back): tell it about the stream, and give it the
   * events after the last one it saw that this tab still keeps.
   * @param {string} to
   * @param {string} lastEventId
   */
  #welcome(to, lastEventId) {
    /** @type {StreamItem[]} */
    let replay = [];
    let reset = false;
    if (lastEventId) {
      const index = this.#log.findIndex((item) => item.id === lastEventId);
      if (index !== -1) replay = this.#log.slice(index + 1);
      else reset = this.#trimmed;
    }
    this.#say({ t: "welcome", to, channels: this.channels, replay, reset, ...this.#host.session() });
  }

  /**
   * The leader: a tab asks for channels the stream lacks (open it again,
   * once the tabs that join together have said so), or handles events it
   * does not hear yet.
   */
  #grown() {
    for (const name of this.names()) this.#host.listen(name);
    if (this.#widening !== null || !this.#wider()) return;
    this.#widening = setTimeout(() => {
      this.#widening = null;
      // An election may have opened the stream on every channel meanwhile.
      if (!this.leading || !this.#wider()) return;
      this.channels = this.#union();
      for (const name of this.channels) this.#host.listen(name);
      this.#host.widen();
    }, SHARED_WIDEN_MS);
  }

  /** @returns {boolean} whether a tab asks for a channel the stream lacks */
  #wider() {
    return this.#union().some((name) => !this.channels.includes(name));
  }
}

/**
 * One connection to a txgraphsse endpoint: the stream, and calls both ways.
 * Mirrors graphscript's `EventSourceInfo`.
 */
export class GraphSSE {
  /** @type {Promise<string>} Resolves with the first session id. */
  ready;
  /**
   * @type {string | null} The session id: a new one after each reconnection.
   * Calls made while the stream reconnects wait for the new session.
   */
  sessionId = null;
  /** @type {string} The last event id seen; sent back on reconnection. */
  lastEventId = "";
  /** @type {EventSource | null} The current EventSource. */
  source = null;
  /** @type {boolean} Whether the handle has stopped for good. */
  closed = false;
  /** @type {Record<string, Route | Record<string, Route>>} Browser routes. */
  routes;

  /** @type {string | null} The token `getToken` gave last. */
  #token = null;
  /**
   * @type {string | null} The token the open session is under: the one its
   * stream was opened with, or the last one a refresh was answered for.
   * POSTs carry it.
   */
  #sessionToken = null;
  /** @type {string | null} The token in the current EventSource's URL. */
  #sourceToken = null;
  /** Whether the server said the token expired, or refused to carry on under it. */
  #stale = false;
  /** @type {ReturnType<typeof setTimeout> | null} When the token is renewed. */
  #tokenTimer = null;
  /** @type {string[]} The channels the stream asks for (less those it left). */
  #channels;

  /** @type {GraphSSEOptions} */
  #options;
  /**
   * The next session, while none is open (calls wait for it).
   * @type {{promise: Promise<string>, resolve: (id: string) => void, reject: (reason: unknown) => void} | null}
   */
  #next = deferred();
  /** @type {Map<string, {resolve: (v: any) => void, reject: (e: any) => void}>} */
  #pending = new Map();
  /** @type {Map<string, Subscription>} ours to the server's routes */
  #subscriptions = new Map();
  /** @type {Map<string, Set<number>>} the server's subscriptions to our routes */
  #served = new Map();
  /** @type {Map<string, Promise<void>>} the last update of each route on its way */
  #updating = new Map();
  #lastSub = 0;
  /** @type {Map<string, {body: any, done: {promise: Promise<any>, resolve: (value: any) => void, reject: (reason: unknown) => void}}[]>} messages for this turn's POST, by session */
  #batches = new Map();
  #attempts = 0;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #timer = null;
  /** @type {TabGroup | null} The tabs this one shares its stream with (`shared`). */
  #group = null;
  /** @type {Map<string, number>} When each browser route was registered (for `shared`). */
  #routeSince = new Map();
  /** @type {string | null} Where the next stream resumes, if not after `lastEventId`. */
  #resumeId = null;
  /** @type {Set<string>} The event names the current source is listened to for. */
  #listening = new Set();
  /** The current source's last event id, before its latest event. */
  #previousId = "";

  /**
   * Open the stream at once (with `shared`: join the tabs that share it).
   * @param {GraphSSEOptions} options
   */
  constructor(options) {
    if (!options?.url) throw new TypeError("GraphSSE needs a url");
    this.#options = options;
    const base = globalThis.location?.href ?? "http://localhost/";
    /** @type {string} The endpoint's absolute URL, where POSTs go. */
    this.url = new URL(options.url, base).href;
    /** @type {string} The endpoint's path, quoted in requests. */
    this.path = new URL(this.url).pathname;
    this.routes = { ...options.routes };
    this.lastEventId = options.lastEventId ?? "";
    this.#channels = [...(options.channels ?? [])];
    this.ready = /** @type {Promise<string>} */ (this.#next?.promise);
    const since = now();
    for (const name of Object.keys(this.routes)) this.#routeSince.set(name, since);
    if (options.shared && TabGroup.supported()) {
      const url = new URL(this.url);
      url.hash = "";
      const name = options.shared === true ? "" : `${options.shared}@`;
      this.#group = new TabGroup(`graphsse:${name}${url.href}`, this.#tabHost());
      return;
    }
    this.#connect();
  }

  /** @returns {string | null} The current token (`getToken`'s last), if any. */
  get token() {
    return this.#token;
  }

  /**
   * @returns {boolean} Whether this handle holds the stream itself: always,
   * unless it shares one (`shared`) that another tab holds.
   */
  get leader() {
    return !this.closed && (this.#group === null || this.#group.leading);
  }

  /**
   * Open a connection (same as `new GraphSSE(options)`).
   * @param {GraphSSEOptions} options
   * @returns {GraphSSE}
   */
  static openSSE(options) {
    return new GraphSSE(options);
  }

  // Calls to the server

  /**
   * POST `message` as it is (plus `sessionId`).
   * @param {any} message
   * @returns {Promise<any>} the server's JSON answer, if any
   */
  send(message) {
    return this.#post(message);
  }

  /**
   * Run server route `route`, fire and forget.
   * @param {string} route
   * @param {any} [args]
   * @param {string} [method]
   * @returns {Promise<void>} settles when the server has answered
   */
  async post(route, args, method) {
    await this.#post(envelope(route, args, method));
  }

  /**
   * Run server route `route`.
   * @param {string} route
   * @param {any} [args]
   * @param {string} [method]
   * @returns {Promise<any>} its result
   */
  async run(route, args, method) {
    return (await this.#post(envelope(route, args, method)))?.args;
  }

  /**
   * Have the server run `message` (`{route, args}`) through `runRequest`;
   * the result comes in the POST's answer and again on the stream, and the
   * first one settles the call.
   * @param {{route: string, args?: any, method?: string}} message
   * @param {string} [method]
   * @returns {Promise<any>}
   */
  async request(message, method) {
    if (method) message = { ...message, method };
    const sessionId = await this.#session();
    const callbackId = newCallbackId();
    return new Promise((resolve, reject) => {
      this.#pending.set(callbackId, { resolve, reject });
      const body = {
        route: "runRequest",
        args: [message, this.path, callbackId, sessionId],
        sessionId,
      };
      this.#post(body).then(
        (answer) => this.#pending.delete(callbackId) && resolve(answer?.args),
        (error) => this.#pending.delete(callbackId) && reject(error),
      );
    });
  }

  /**
   * Receive every output of server route `route`.  One server subscription
   * per route: subscribing again adds `callback` to it and gives the same
   * number.  It survives reconnections (the client subscribes again).
   * @param {string} route
   * @param {((value: any) => void) | string} [callback] a function, or the
   *   name of a browser route to run with each value
   * @param {any} [args]
   * @returns {Promise<number>} the subscription number
   */
  subscribe(route, callback, args = null) {
    let entry = this.#subscriptions.get(route);
    if (!entry) {
      /** @type {Subscription} */
      const mine = { args, id: null, sub: null, callbacks: new Set(), promise: Promise.resolve(0) };
      this.#subscriptions.set(route, mine);
      mine.promise = this.#subscribeOnServer(route, mine).then(
        (sub) => {
          mine.id = sub;
          this.#group?.announce();
          return sub;
        },
        (error) => {
          if (this.#subscriptions.get(route) === mine) this.#subscriptions.delete(route);
          this.#group?.announce();
          throw error;
        },
      );
      entry = mine;
      this.#group?.announce();
    }
    if (typeof callback === "string") {
      const name = callback;
      callback = (value) => this.call(name, [value]).catch((e) => this.#report(e));
    }
    if (callback) entry.callbacks.add(callback);
    return entry.promise;
  }

  /**
   * End a subscription (every callback of `route`).  With `shared`, while
   * another tab subscribes to `route` too, only this tab's callbacks end.
   * @param {string} route
   * @param {number} [sub] the number `subscribe` gave (default: ours on `route`)
   * @returns {Promise<boolean>} whether the server had it
   */
  async unsubscribe(route, sub) {
    const entry = this.#subscriptions.get(route);
    if (entry && (sub === undefined || sub === entry.id || sub === entry.sub)) {
      this.#subscriptions.delete(route);
      if (this.#group) {
        this.#group.announce();
        if (this.#group.subscribed(route, true)) return true; // the session keeps it for them
      }
      try {
        await entry.promise;
      } catch {
        return false;
      }
      sub = /** @type {number} */ (entry.sub);
    }
    const answer = await this.#post({ route: "unsubscribe", args: [route, sub] });
    return answer?.args === true;
  }

  /**
   * Close the stream for good; nothing reconnects.
   * @returns {boolean} whether it was open
   */
  terminate() {
    return this.#stop(undefined);
  }

  // Browser routes

  /**
   * Add (or replace) a browser route the server can call (with `shared`,
   * add routes this way, so that the other tabs hear of them).
   * @param {string} name
   * @param {Route | Record<string, Route>} route
   * @returns {this}
   */
  addRoute(name, route) {
    this.routes[name] = route;
    if (!this.#routeSince.has(name)) this.#routeSince.set(name, now());
    this.#group?.announce();
    return this;
  }

  /**
   * Run browser route `name` here, as the server would; the server's
   * subscribers to it get the result.
   * @param {string} name
   * @param {any} [args]
   * @param {string} [method]
   * @returns {Promise<any>}
   */
  async call(name, args, method) {
    const route = Object.hasOwn(this.routes, name) ? this.routes[name] : undefined;
    let fn = route;
    let self = /** @type {any} */ (this);
    if (route && typeof route === "object") {
      fn = method && Object.hasOwn(route, method) ? route[method] : undefined;
      self = route;
    }
    if (typeof fn !== "function") {
      throw failure(`no route ${JSON.stringify(name)} here`, 404, "no_route");
    }
    const result = await fn.apply(self, spread(args));
    this.emit(name, result);
    return result;
  }

  /**
   * Give the server's subscribers to browser route `name` a new output
   * without running the route (undefined is no output).
   * @param {string} name
   * @param {any} value
   */
  emit(name, value) {
    const sessionId = this.sessionId;
    if (value === undefined || !this.#served.get(name)?.size || !sessionId) return;
    const body = { args: value, callbackId: name, sessionId };
    // Each update waits for the one before it: POSTs on several connections
    // may overtake one another, and a subscriber must see the route's
    // outputs in the order the route made them.
    const previous = this.#updating.get(name) ?? Promise.resolve();
    const sent = previous
      .then(() => this.#post(body))
      .then(
        () => undefined,
        (error) => {
          if (error.status === 404 || error.status === 409) this.#served.delete(name);
          this.#report(error);
        },
      )
      .finally(() => {
        if (this.#updating.get(name) === sent) this.#updating.delete(name);
      });
    this.#updating.set(name, sent);
  }

  // The stream

  /**
   * Whether this handle may open a stream: it is not closed, and it does
   * not share one that another tab holds.
   * @returns {boolean}
   */
  #mayStream() {
    return !this.closed && (this.#group === null || this.#group.leading);
  }

  /**
   * Open a stream; with `getToken`, once there is a token fit for it (when
   * `getToken` fails: wait, with the backoff, and try again).
   */
  #connect() {
    if (!this.#mayStream()) return;
    if (!this.#options.getToken) {
      this.#open();
      return;
    }
    this.#freshToken().then(
      () => {
        if (this.#mayStream()) this.#open();
      },
      (error) => {
        this.#report(error);
        if (this.#mayStream()) this.#retry(this.#options.retryDelay ?? DEFAULT_RETRY_MS);
      },
    );
  }

  /** @returns {string[]} the channels the stream asks for: with `shared`, every tab's */
  #streamChannels() {
    return this.#group?.leading ? this.#group.channels : this.#channels;
  }

  /**
   * The URL of the next stream: the endpoint's, with the last event id, the
   * token and the channels in its query.
   * @returns {string}
   */
  #streamUrl() {
    const url = new URL(this.url);
    url.hash = "";
    const last = this.#resumeId ?? this.lastEventId;
    if (last) url.searchParams.set("lastEventId", last);
    if (this.#options.getToken && this.#token !== null) url.searchParams.set("token", this.#token);
    let href = url.href;
    const channels = this.#streamChannels();
    if (channels.length) {
      const names = channels.map(encodeURIComponent).join(",");
      href += `${url.search ? "&" : "?"}channels=${names}`;
    }
    return href;
  }

  #open() {
    const options = this.#options;
    const Source = options.EventSource ?? globalThis.EventSource;
    const href = this.#streamUrl();
    const source = new Source(href, { withCredentials: !!options.withCredentials });
    this.source = source;
    this.#listening = new Set();
    this.#previousId = "";
    this.#sourceToken = options.getToken ? this.#token : null;
    source.onopen = (event) => {
      if (this.source !== source) return;
      options.onopen?.(event, this);
      this.#group?.tell({ t: "open", channels: this.#group.channels });
    };
    source.onerror = (event) => this.#streamError(event, source);
    const names = [
      ...STREAM_EVENTS,
      ...Object.keys(options.events ?? {}),
      ...this.#streamChannels(),
      ...(this.#group?.names() ?? []),
    ];
    for (const name of names) this.#listen(source, name);
    return source;
  }

  /**
   * Hear `source`'s events named `name` (once).
   * @param {EventSource} source
   * @param {string} name
   */
  #listen(source, name) {
    if (this.#listening.has(name)) return;
    this.#listening.add(name);
    source.addEventListener(name, (event) => this.#fromSource(name, /** @type {MessageEvent} */ (event), source));
  }

  /**
   * An event of our stream: ours to handle, or, with `shared`, every tab's
   * (a call goes to the tab that answers it).
   * @param {string} name
   * @param {MessageEvent} event
   * @param {EventSource} source
   */
  #fromSource(name, event, source) {
    if (this.source !== source) return;
    const lastEventId = typeof event.lastEventId === "string" ? event.lastEventId : this.lastEventId;
    // An event that came with an `id:` changes the stream's last id; the
    // others carry the one before.
    const id = lastEventId !== this.#previousId ? lastEventId : null;
    this.#previousId = lastEventId;
    /** @type {StreamItem} */
    const item = { type: name, data: event.data, lastEventId, id: id || null };
    const group = this.#group;
    if (group === null) {
      this.#dispatch(item, true, event);
    } else if (name === "message") {
      const data = parse(event.data);
      if (data?.route === "setId") item.token = this.#sourceToken;
      const owner = this.#ownerOf(data);
      if (owner === null) group.forward(item, event);
      else group.send(owner, item, event);
    } else {
      group.forward(item, event);
    }
    if (name === "expired") this.#expired(source);
  }

  /**
   * Handle an event of the stream (ours, or the shared one's).
   * @param {StreamItem} item
   * @param {boolean} run whether it may run a route here (a call for this tab)
   * @param {MessageEvent} [event] the stream's own event (else one is made)
   */
  #dispatch(item, run, event) {
    if (this.closed) return;
    const options = this.#options;
    const name = item.type;
    this.lastEventId = item.lastEventId;
    event ??= new MessageEvent(name, { data: item.data, lastEventId: item.lastEventId });
    if (name === "message") {
      this.#receive(event, run, item.token ?? null);
      return;
    }
    const data = parse(item.data);
    if (name === "reset") options.onreset?.(data?.args ?? {}, this);
    else if (name === "shutdown") options.onshutdown?.(data?.args, this);
    else if (name === "expired") options.onexpired?.(data?.args, this);
    else if (name === "left") this.#left(data?.args);
    // Another tab's channel, which the shared stream carries for it.
    if (this.#group?.channels.includes(name) && !this.#channels.includes(name)) return;
    const events = options.events ?? {};
    if (Object.hasOwn(events, name)) events[name](data, event, this);
    else if (this.#channels.includes(name)) options.onmessage?.(data, event, this);
  }

  /**
   * The stream's session ended, and another opens (with `shared`, the
   * other tabs' calls wait for it too).
   */
  #sessionEnds() {
    if (!this.closed) this.#next ??= deferred();
    this.#group?.tell({ t: "reopen" });
  }

  /**
   * @param {Event} event
   * @param {EventSource} source
   */
  #streamError(event, source) {
    if (this.source !== source) return;
    // The session ended with its stream: calls wait for the next one.
    if (!this.closed) this.#next ??= deferred();
    this.#group?.tell({ t: "lost" });
    this.#options.onerror?.(event, this);
    if (this.closed) return;
    // CONNECTING: the browser reconnects by itself (Last-Event-ID and all),
    // unless the token in the source's URL will not do: then we take over.
    // CLOSED: it gave up on a refusal (non-200); we take over.
    if (source.readyState === CLOSED) {
      this.#reconnectLater(true);
    } else if (this.#options.getToken && this.#sourceTokenUnfit()) {
      source.close();
      this.#reconnectLater(false);
    }
  }

  /**
   * Whether the browser's own reconnection would carry a token that is not
   * the one to use: stale, replaced since (by a refresh), or about to expire
   * (within `retryDelay` and a second).
   * @returns {boolean}
   */
  #sourceTokenUnfit() {
    const token = this.#sourceToken;
    if (this.#stale || token === null || token !== this.#token) return true;
    const expires = tokenExpiry(token);
    const ahead = TOKEN_LEAST_MS + (this.#options.retryDelay ?? DEFAULT_RETRY_MS);
    return expires !== null && expires - Date.now() <= ahead;
  }

  /**
   * The server ended the stream at its token's expiry (`onexpired` has
   * been told).  With `getToken`, a new stream opens at once with a fresh
   * token and the last event id (the browser's own reconnection would carry
   * the expired one).
   * @param {EventSource} source
   */
  #expired(source) {
    if (!this.#options.getToken || this.closed || this.source !== source) return;
    this.#stale = true;
    this.#sessionEnds();
    source.close();
    this.#connect();
  }

  /**
   * A refresh took the stream out of `channel`: later streams do not ask for
   * it (the server would refuse them).  With `shared`, a tab that did not
   * ask for it is not told.
   * @param {any} channel
   */
  #left(channel) {
    const group = this.#group;
    if (typeof channel === "string") {
      const had = this.#channels.includes(channel);
      this.#channels = this.#channels.filter((name) => name !== channel);
      if (group) {
        group.left(channel);
        if (!had) return;
        group.announce();
      }
    }
    this.#options.onleft?.(channel, this);
  }

  /**
   * Ask why the server refused, then wait (Retry-After, backoff) and reopen.
   * With `getToken`, take a fresh token first if `renew` (the refusal may be
   * the token's), else if the current one is about to expire.
   * @param {boolean} renew
   */
  async #reconnectLater(renew) {
    const options = this.#options;
    let base = options.retryDelay ?? DEFAULT_RETRY_MS;
    if (options.getToken) {
      if (renew) this.#stale = true;
      try {
        await this.#freshToken();
      } catch (error) {
        this.#report(error);
        if (this.#mayStream()) this.#retry(base);
        return;
      }
    }
    try {
      const url = this.#streamUrl();
      /** @type {RequestInit} */
      const init = { cache: "no-store", credentials: this.#credentials() };
      const head = await this.#fetch(url, { ...init, method: "HEAD" });
      if (FINAL_STATUSES.includes(head.status)) {
        // A HEAD answer has no body: ask again with GET for the server's reason.
        const controller = new AbortController();
        const get = head.status === 204 ? head : await this.#fetch(url, { ...init, signal: controller.signal });
        if (FINAL_STATUSES.includes(get.status)) {
          this.#stop(await refusal(get));
          return;
        }
        controller.abort(); // it would serve us now after all
      } else {
        base = retryAfterMs(head.headers.get("retry-after")) ?? base;
      }
    } catch {
      // unreachable: back off all the same
    }
    if (!this.#mayStream()) return;
    this.#retry(base);
  }

  /**
   * Open a stream again after `base` ms, doubled for each attempt since the
   * last session, with some jitter, at most `maxRetryDelay`.
   * @param {number} base
   */
  #retry(base) {
    const attempt = this.#attempts++;
    const cap = this.#options.maxRetryDelay ?? MAX_RETRY_MS;
    const backoff = Math.min(cap, base * 2 ** attempt * (1 + Math.random() / 5));
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#connect();
    }, Math.max(base, backoff));
  }

  // Tokens

  /**
   * Before a new stream: ask `getToken` if there is no token, or it is
   * stale or about to expire; else keep it.
   * @returns {Promise<void>}
   */
  async #freshToken() {
    const token = this.#token;
    const expires = token === null ? null : tokenExpiry(token);
    if (this.#stale || token === null || (expires !== null && expires - Date.now() <= TOKEN_LEAST_MS)) {
      await this.#renewToken();
    }
  }

  /**
   * Ask `getToken` now and keep its answer; a new token's renewal is
   * scheduled.
   * @returns {Promise<string>}
   */
  async #renewToken() {
    const getToken = /** @type {() => string | Promise<string>} */ (this.#options.getToken);
    const token = await getToken();
    if (typeof token !== "string" || !token) {
      throw new TypeError(`getToken gave ${token === null ? "null" : typeof token}, not a token`);
    }
    if (this.closed) return token;
    const fresh = token !== this.#token;
    this.#token = token;
    this.#stale = false;
    // The same token again: asking again before it expires would not help;
    // the stream ends at its expiry and the reconnection asks.
    if (fresh) this.#scheduleRenewal(token);
    return token;
  }

  /**
   * Renew `token` shortly before its `exp`: this share of its remaining
   * life, within a second and a minute.  A token without `exp` is renewed
   * only when the server says it expired.
   * @param {string} token
   */
  #scheduleRenewal(token) {
    if (this.#tokenTimer !== null) clearTimeout(this.#tokenTimer);
    this.#tokenTimer = null;
    const expires = tokenExpiry(token);
    if (expires === null) return;
    const left = expires - Date.now();
    const due = expires - Math.min(TOKEN_MOST_MS, Math.max(TOKEN_LEAST_MS, left * TOKEN_MARGIN));
    const wait = () => {
      const delay = due - Date.now();
      if (delay > MAX_TIMER_MS) {
        this.#tokenTimer = setTimeout(wait, MAX_TIMER_MS);
        return;
      }
      this.#tokenTimer = setTimeout(() => {
        this.#tokenTimer = null;
        this.#refreshToken();
      }, Math.max(0, delay));
    };
    wait();
  }

  /** The token is about to expire: get a new one, and carry the session on under it. */
  async #refreshToken() {
    if (!this.#mayStream()) return; // with `shared`, the leader refreshes
    const before = this.#token;
    try {
      await this.#renewToken();
    } catch (error) {
      // The stream carries on until the token's expiry; then the server
      // ends it, and the reconnection asks again.
      this.#report(error);
      return;
    }
    if (this.#token !== before) this.#refreshSession();
  }

  /**
   * POST `refreshToken` with the current token, so that the open session
   * carries on under it.  Without an open session there is nothing to do:
   * the next stream takes the token.  A refusal (`not_here`, `forbidden`,
   * ...) leaves the session under its old token, until its expiry; the
   * reconnection then takes a fresh one.
   */
  async #refreshSession() {
    const token = this.#token;
    const sessionId = this.sessionId;
    if (this.closed || token === null || sessionId === null || this.#next !== null) return;
    if (this.source?.readyState !== OPEN) return;
    try {
      await this.#postNow(sessionId, { route: "refreshToken", sessionId }, token);
      if (this.sessionId === sessionId && this.#next === null) {
        this.#sessionToken = token;
        this.#group?.tell({ t: "token", token });
      }
    } catch (error) {
      if (this.#token === token) this.#stale = true;
      this.#report(error);
    }
  }

  /**
   * @param {GraphSSEError | undefined} reason
   * @returns {boolean}
   */
  #stop(reason) {
    if (this.closed) return false;
    this.closed = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#tokenTimer !== null) clearTimeout(this.#tokenTimer);
    this.#tokenTimer = null;
    // A refusal no reconnection can help ends every tab's handle; a tab
    // that terminates hands the stream on.
    if (reason && this.#group?.leading) {
      const { message, status, code } = reason;
      this.#group.tell({ t: "closed", message, status, code });
    }
    this.#group?.leave();
    this.source?.close();
    this.#next?.reject(reason ?? failure("the connection was terminated", 0, "terminated"));
    this.#next = null;
    this.#options.onclose?.(reason, this);
    return true;
  }

  /**
   * A `message` event: a framework message, or application data.
   * @param {MessageEvent} event
   * @param {boolean} run whether it may run a route here (with `shared`,
   *   calls come to the tab that answers them, not with every event)
   * @param {string | null} token with `shared`, the token of a new session
   */
  #receive(event, run, token) {
    const data = parse(event.data);
    if (data && typeof data === "object" && !Array.isArray(data)) {
      const route = data.route;
      if (route === "setId" && typeof data.args === "string") return this.#setId(data.args, token);
      if (route === "runRequest") return void (run && this.#answer(data.args));
      if (run && typeof route === "string" && Object.hasOwn(this.routes, route)) {
        this.call(route, data.args, data.method).catch((error) => this.#report(error));
        return;
      }
      if (route === undefined && "callbackId" in data) return this.#settle(data.callbackId, data.args);
    }
    (this.#options.onmessage ?? this.#options.events?.message)?.(data, event, this);
  }

  /**
   * @param {string} sessionId
   * @param {string | null} [token] with `shared`, the token the leader's
   *   stream was opened with (a follower's POSTs carry it)
   */
  #setId(sessionId, token = null) {
    const again = this.sessionId !== null && this.sessionId !== sessionId;
    this.sessionId = sessionId;
    this.#attempts = 0;
    this.#resumeId = null;
    this.#served.clear(); // the server's subscriptions ended with the old session
    this.#sessionToken = this.leader ? this.#sourceToken : (token ?? this.#sessionToken);
    this.#next?.resolve(sessionId);
    this.#next = null;
    // A token that came while the stream was opening: the session takes it.
    if (this.#sourceToken !== null && this.#sourceToken !== this.#token && !this.#stale) {
      this.#refreshSession();
    }
    if (again) {
      for (const [route, entry] of this.#subscriptions) {
        this.#subscribeOnServer(route, entry).catch((error) => {
          this.#subscriptions.delete(route);
          this.#report(error);
        });
      }
    }
    this.#options.onsession?.(sessionId, this);
  }

  /**
   * A reply to our request, or an update of our subscription.
   * @param {unknown} callbackId
   * @param {any} args
   */
  #settle(callbackId, args) {
    const key = String(callbackId);
    const pending = this.#pending.get(key);
    if (pending) {
      this.#pending.delete(key);
      pending.resolve(args);
      return;
    }
    // Anything else is the duplicate of a call already settled: dropped.
    for (const callback of this.#subscriptions.get(key)?.callbacks ?? []) {
      try {
        callback(args);
      } catch (error) {
        this.#report(/** @type {any} */ (error));
      }
    }
  }

  /**
   * Run the server's request `[message, path, callbackId, sessionId]` and
   * POST the result back.  A failure is posted as `args: null` with `error`.
   * @param {any} request
   */
  async #answer(request) {
    if (!Array.isArray(request)) return;
    const [message, , callbackId, sessionId] = request;
    /** @type {{args: any, callbackId: any, sessionId: any, error?: {code: string, message: string}}} */
    const reply = { args: null, callbackId, sessionId: sessionId ?? this.sessionId };
    try {
      const { route, args, method } = message ?? {};
      let result;
      if (route === "subscribeSSE") result = this.#serve(args);
      else if (route === "unsubscribe") result = this.#unserve(args);
      else result = await this.call(route, args, method);
      reply.args = result ?? null;
    } catch (error) {
      const { code = "route_failed", message: text = String(error) } = /** @type {any} */ (error) ?? {};
      reply.error = { code, message: text };
    }
    this.#post(reply).catch((error) => this.#report(error));
  }

  /**
   * The server subscribes to browser route `args[0]`.
   * @param {any} args `[route, path, args, key, subInput, sessionId]`
   * @returns {number}
   */
  #serve(args) {
    const route = Array.isArray(args) ? args[0] : undefined;
    if (typeof route !== "string" || !Object.hasOwn(this.routes, route)) {
      throw failure(`no route ${JSON.stringify(route)} here`, 404, "no_route");
    }
    const sub = ++this.#lastSub;
    if (!this.#served.has(route)) this.#served.set(route, new Set());
    this.#served.get(route)?.add(sub);
    return sub;
  }

  /**
   * @param {any} args `[route, sub]`
   * @returns {boolean}
   */
  #unserve(args) {
    const [route, sub] = Array.isArray(args) ? args : [];
    const subs = this.#served.get(route);
    const had = subs?.delete(sub) ?? false;
    if (subs && !subs.size) this.#served.delete(route);
    return had;
  }

  // POSTs

  /**
   * @param {string} route
   * @param {{args: any, sub: number | null}} entry
   * @returns {Promise<number>}
   */
  async #subscribeOnServer(route, entry) {
    const sessionId = await this.#session();
    const answer = await this.#post({
      route: "subscribeSSE",
      args: [route, this.path, entry.args ?? null, null, null, sessionId],
      sessionId,
    });
    entry.sub = answer?.args;
    return /** @type {number} */ (entry.sub);
  }

  /** @returns {Promise<string>} the open session's id, once there is one */
  async #session() {
    return this.#next?.promise ?? /** @type {string} */ (this.sessionId);
  }

  /**
   * POST one JSON message; resolve with the parsed answer (undefined if none).
   * What is posted in one turn of the event loop goes in one POST: a batch
   * (an array, answered by an array in the same order) when there are
   * several, the message alone when there is one.
   * @param {any} body
   * @returns {Promise<any>}
   */
  async #post(body) {
    const named = body && typeof body === "object" && !Array.isArray(body);
    let sessionId = named ? body.sessionId : undefined;
    if (typeof sessionId !== "string") {
      sessionId = await this.#session();
      if (named) body = { ...body, sessionId };
    }
    let batch = this.#batches.get(sessionId);
    if (!batch) {
      const queued = (batch = []);
      this.#batches.set(sessionId, queued);
      setTimeout(() => {
        this.#batches.delete(/** @type {string} */ (sessionId));
        this.#flush(/** @type {string} */ (sessionId), queued);
      }, 0);
    }
    const done = deferred();
    batch.push({ body, done });
    return done.promise;
  }

  /**
   * Send what this turn posted for `sessionId`.
   * @param {string} sessionId
   * @param {{body: any, done: {resolve: (value: any) => void, reject: (reason: unknown) => void}}[]} queued
   */
  async #flush(sessionId, queued) {
    if (queued.length === 1) {
      const [{ body, done }] = queued;
      this.#postNow(sessionId, body).then(done.resolve, done.reject);
      return;
    }
    let answers;
    try {
      answers = await this.#postNow(sessionId, queued.map((entry) => entry.body));
      if (!Array.isArray(answers) || answers.length !== queued.length) {
        throw failure("the answer to a batch is not an array of its size", 200, "bad_json");
      }
    } catch (error) {
      for (const { done } of queued) done.reject(error);
      return;
    }
    queued.forEach(({ done }, index) => {
      const answer = answers[index];
      const error = answer && typeof answer === "object" ? answer.error : null;
      if (error && typeof error === "object") {
        const code = typeof error.code === "string" ? error.code : "http_error";
        done.reject(failure(String(error.message ?? code), STATUS_OF[code] ?? 500, code));
      } else {
        done.resolve(answer ?? undefined);
      }
    });
  }

  /**
   * POST `body` (a message or a batch) at once.
   * @param {string} sessionId
   * @param {any} body
   * @param {string | null} [token] for `Authorization: Bearer` (default:
   *   the session's, with `getToken`; with `shared`, the leader's)
   * @returns {Promise<any>}
   */
  async #postNow(sessionId, body, token = this.#sessionToken ?? this.#token) {
    /** @type {Record<string, string>} */
    const headers = { ...this.#options.headers };
    if (token) {
      for (const name of Object.keys(headers)) {
        if (name.toLowerCase() === "authorization") delete headers[name];
      }
      headers.Authorization = `Bearer ${token}`;
    }
    let response;
    try {
      response = await this.#fetch(this.url, {
        method: "POST",
        headers: {
          ...headers,
          "Content-Type": JSON_TYPE,
          "X-GraphSSE-Session": sessionId,
        },
        body: JSON.stringify(body),
        cache: "no-store",
        credentials: this.#credentials(),
      });
    } catch (cause) {
      throw failure(`POST ${this.url} failed: ${/** @type {any} */ (cause)?.message ?? cause}`, 0, "network_error", cause);
    }
    if (!response.ok) throw await refusal(response);
    const text = await response.text();
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch (cause) {
      throw failure("the answer is not JSON", response.status, "bad_json", cause);
    }
  }

  // The shared stream (`shared`)

  /**
   * What this handle's TabGroup may ask of it.
   * @returns {TabHost}
   */
  #tabHost() {
    return {
      state: () => this.#tabState(),
      deliver: (item, run, event) => this.#dispatch(item, run, event),
      lead: (resumeId) => {
        if (this.closed) return;
        this.#resumeId = resumeId;
        this.#next ??= deferred();
        this.#connect();
      },
      widen: () => {
        const source = this.source;
        // No source, or a closed one: the next opens soon, on the group's channels.
        if (this.closed || !source || source.readyState === CLOSED) return;
        this.#sessionEnds();
        source.close();
        this.source = null;
        this.#connect();
      },
      listen: (name) => {
        if (this.source) this.#listen(this.source, name);
      },
      follow: () => {
        if (!this.closed) this.#next ??= deferred();
      },
      session: () => ({
        sessionId: this.#next ? null : this.sessionId,
        token: this.#sessionToken,
        open: this.#next === null && this.source?.readyState === OPEN,
      }),
      control: (message) => this.#control(message),
      abdicate: () => {
        if (this.#timer !== null) clearTimeout(this.#timer);
        this.#timer = null;
        if (this.#tokenTimer !== null) clearTimeout(this.#tokenTimer);
        this.#tokenTimer = null;
        this.source?.close();
        this.source = null;
        this.#sourceToken = null;
        if (!this.closed) this.#next ??= deferred();
      },
      unsubscribe: (route, sub) => {
        this.#post({ route: "unsubscribe", args: [route, sub] }).catch((error) => this.#report(error));
      },
    };
  }

  /** @returns {TabState} what this tab asks of the shared stream */
  #tabState() {
    /** @type {Record<string, number | null>} */
    const subs = {};
    for (const [route, entry] of this.#subscriptions) subs[route] = entry.sub;
    // A route set on `routes` itself counts from when the others hear of it.
    for (const name of Object.keys(this.routes)) {
      if (!this.#routeSince.has(name)) this.#routeSince.set(name, now());
    }
    return {
      channels: [...this.#channels],
      events: Object.keys(this.#options.events ?? {}),
      routes: [...this.#routeSince].filter(([name]) => Object.hasOwn(this.routes, name)),
      subs,
      lastEventId: this.lastEventId,
    };
  }

  /**
   * What the leader says of the shared stream.
   * @param {any} message
   */
  #control(message) {
    if (this.closed) return;
    const options = this.#options;
    switch (message.t) {
      case "welcome": {
        if (message.token) this.#sessionToken = message.token;
        const sessionId = message.sessionId;
        if (!message.open || typeof sessionId !== "string") return;
        options.onopen?.(new Event("open"), this);
        if (sessionId !== this.sessionId) {
          this.#setId(sessionId, message.token);
        } else {
          // Back (from a freeze, say) to the session it had.
          this.#next?.resolve(sessionId);
          this.#next = null;
        }
        return;
      }
      case "open":
        options.onopen?.(new Event("open"), this);
        return;
      case "lost":
        this.#next ??= deferred();
        options.onerror?.(new Event("error"), this);
        return;
      case "reopen":
        this.#next ??= deferred();
        return;
      case "token":
        if (typeof message.token === "string") this.#sessionToken = message.token;
        return;
      case "reset":
        // Away longer than the leader remembers: events were missed.
        options.onreset?.({ lastEventId: this.lastEventId || null }, this);
        return;
      case "closed":
        this.#stop(failure(String(message.message), Number(message.status) || 0, String(message.code)));
    }
  }

  /**
   * The leader: the tab a `message` event is a call for (the one that
   * registered its route first), or null if it is every tab's.  A request
   * no tab has the route of is answered here (with `no_route`).
   * @param {any} data
   * @returns {string | null}
   */
  #ownerOf(data) {
    const group = /** @type {TabGroup} */ (this.#group);
    if (!data || typeof data !== "object" || Array.isArray(data)) return null;
    let route = data.route;
    if (route === "runRequest") {
      const message = Array.isArray(data.args) ? data.args[0] : null;
      route = message?.route;
      // The server subscribes to (or leaves) a browser route: its tab serves it.
      if ((route === "subscribeSSE" || route === "unsubscribe") && Array.isArray(message?.args)) {
        route = message.args[0];
      }
      return (typeof route === "string" ? group.owner(route) : null) ?? group.tab;
    }
    if (typeof route !== "string" || route === "setId") return null;
    return group.owner(route);
  }

  /**
   * @param {string} url
   * @param {RequestInit} init
   * @returns {Promise<Response>}
   */
  #fetch(url, init) {
    const fetcher = this.#options.fetch ?? globalThis.fetch;
    return fetcher(url, init);
  }

  /** @returns {RequestCredentials} */
  #credentials() {
    return this.#options.withCredentials ? "include" : "same-origin";
  }

  /** @param {any} error */
  #report(error) {
    this.#options.onerror?.(error, this);
  }
}

/**
 * `{route, args, method?}`
 * @param {string} route
 * @param {any} args
 * @param {string | undefined} method
 */
function envelope(route, args, method) {
  /** @type {{route: string, args: any, method?: string}} */
  const message = { route, args: args ?? null };
  if (method) message.method = method;
  return message;
}

/**
 * Open a connection to a txgraphsse endpoint (graphscript's `openSSE`).
 * @param {GraphSSEOptions} options
 * @returns {GraphSSE}
 */
export function openSSE(options) {
  return new GraphSSE(options);
}

export default GraphSSE;
