/**
 * Type declarations of graphsse.js, the browser client of txgraphsse
 * (served as `<path>/client.js`; the classic script `<path>/client.classic.js`
 * defines the same `GraphSSE` class as a global).
 */

/** An Error for a refused or failed POST. */
export interface GraphSSEError extends Error {
  /** The HTTP status; 0 when the network failed or the handle was terminated. */
  status: number;
  /** The server's machine word (`no_route`, `forbidden`, ...), or `http_error`, `network_error`, `bad_json`, `terminated`. */
  code: string;
}

/** A browser route the server may run; `this` is the connection. */
export type Route = (this: GraphSSE, ...args: any[]) => any;

/** A route: a function, or an object of functions picked by `method`. */
export type RouteEntry = Route | Record<string, (...args: any[]) => any>;

/** A message that runs a route: `{route, args, method?}`. */
export interface RouteMessage {
  route: string;
  args?: any;
  method?: string;
}

export interface GraphSSEOptions {
  /** The endpoint: GET opens the stream, POST carries calls. */
  url: string;
  /** Channels to join (`?channels=a,b`). */
  channels?: string[];
  /** Browser routes the server can call. */
  routes?: Record<string, RouteEntry>;
  /** Handlers of named events (a channel's events are named after it); `data` is parsed JSON, or the text. */
  events?: Record<string, (data: any, event: Event, sse: GraphSSE) => void>;
  /** Application data: `message` events that are not framework messages, and events of joined channels without an `events` handler. */
  onmessage?: (data: any, event: MessageEvent, sse: GraphSSE) => void;
  /** Each (re)connection of the stream. */
  onopen?: (event: Event, sse: GraphSSE) => void;
  /** A stream error (an Event), or the Error of a POST nobody awaits. */
  onerror?: (error: Event | GraphSSEError, sse: GraphSSE) => void;
  /** The handle stopped for good: `terminate()` (no reason), or a refusal reconnecting cannot help. */
  onclose?: (reason: GraphSSEError | undefined, sse: GraphSSE) => void;
  /** A session opened; after a reconnection the id is new. */
  onsession?: (sessionId: string, sse: GraphSSE) => void;
  /** The server could not replay every event since `lastEventId`: some were missed. */
  onreset?: (info: { lastEventId: string | null }, sse: GraphSSE) => void;
  /** The server is shutting down; the client reconnects when it can. */
  onshutdown?: (args: any, sse: GraphSSE) => void;
  /**
   * Where the client's tokens (JWTs, say) come from.  Asked before the stream
   * opens, again shortly before each token's `exp` (10% of its remaining
   * life, within 1 s and 60 s; read unverified), and before a reconnection
   * that needs a fresh token (after an `expired` event, a refused stream, or
   * a failed refresh).  The token goes in the stream's URL (`?token=`) and
   * in every POST (`Authorization: Bearer`); a renewed one is POSTed as
   * `refreshToken`, so that the same stream carries on.
   */
  getToken?: () => string | Promise<string>;
  /** A refreshed token no longer allows `channel`: the stream left it, and later streams do not ask for it. */
  onleft?: (channel: string, sse: GraphSSE) => void;
  /** The server ended the stream at its token's expiry; with `getToken` the client reconnects at once with a fresh one. */
  onexpired?: (args: any, sse: GraphSSE) => void;
  /**
   * Share one stream with the other tabs of this origin that open the same
   * endpoint (`url`) with `shared` (off by default).  A string names the
   * group: only tabs of the same group share (for example one per user).
   *
   * A Web Lock elects the tab that holds the `EventSource` (the leader); a
   * `BroadcastChannel` carries every event to every tab, and the leader's
   * stream asks for the channels of every tab (a tab that asks for a channel
   * the stream lacks makes the leader open it again on the wider set, from
   * its last event id).  Each tab gets its own `onopen` and `onsession` and
   * the events of its own channels; every tab POSTs its own calls, naming
   * the shared session.  A server call on the session (`run`, `request`,
   * `post`, a subscription to a browser route) runs in the tab that
   * registered the route first; a `request` no tab has the route of is
   * answered `no_route` by the leader.
   *
   * When the leader goes (closed, or its `freeze` or `pagehide` events) the
   * next tab takes the lock and opens a new stream (a new session) from the
   * earliest last event id of the tabs left; each tab drops an event whose id
   * it has seen, so that no event of a channel with history is missed or
   * seen twice.  Events without an id (no history) sent while no tab held
   * the stream are lost.
   *
   * Trade-offs: the session is the browser's, not the tab's (one id for all
   * tabs, which changes at each hand-off and each widening); with `getToken`
   * only the leader asks for tokens and refreshes, and the other tabs' POSTs
   * carry its token, so every tab of a group must be the same principal; the
   * stream keeps the channels of tabs that closed until the next hand-off.
   * Without Web Locks or BroadcastChannel the tab opens a stream of its own.
   */
  shared?: boolean | string;
  /** Send cookies cross-origin, on the stream and on POSTs. */
  withCredentials?: boolean;
  /** Resume after this event id. */
  lastEventId?: string;
  /** Extra headers for every POST (for example `Authorization`, which `getToken`'s token replaces). */
  headers?: Record<string, string>;
  /** Milliseconds to wait after a refusal that names no Retry-After (default 5000); doubled on each failure. */
  retryDelay?: number;
  /** Cap of that backoff in milliseconds (default 60000). */
  maxRetryDelay?: number;
  /** An EventSource implementation (default: the global one). */
  EventSource?: typeof EventSource;
  /** A fetch implementation (default: the global one). */
  fetch?: typeof fetch;
}

/** One connection to a txgraphsse endpoint (graphscript's `EventSourceInfo`). */
export declare class GraphSSE {
  constructor(options: GraphSSEOptions);
  /** Same as `new GraphSSE(options)`. */
  static openSSE(options: GraphSSEOptions): GraphSSE;

  /** Resolves with the first session id; rejects if the handle stops before one. */
  readonly ready: Promise<string>;
  /**
   * The session id: a new one after each reconnection (the stream's end ends
   * the session).  Calls made while the stream reconnects wait for the new one.
   */
  sessionId: string | null;
  /** The last event id seen, sent back on reconnection. */
  lastEventId: string;
  /** The current EventSource (null in a tab that shares another's: `shared`). */
  source: EventSource | null;
  /** Whether this handle holds its stream itself: always, unless it shares one (`shared`) that another tab holds. */
  readonly leader: boolean;
  /** Whether the handle has stopped for good. */
  closed: boolean;
  /** The endpoint's absolute URL. */
  readonly url: string;
  /** The endpoint's path, quoted in requests. */
  readonly path: string;
  /** Browser routes the server can call. */
  routes: Record<string, RouteEntry>;
  /** The token `getToken` gave last (null without `getToken`, or before its first answer). */
  readonly token: string | null;

  /** POST `message` as it is (plus `sessionId`); resolves with the server's JSON answer. */
  send(message: any): Promise<any>;
  /** Run a server route, fire and forget. */
  post(route: string, args?: any, method?: string): Promise<void>;
  /** Run a server route; resolves with its result. */
  run(route: string, args?: any, method?: string): Promise<any>;
  /** Have the server run `message` through `runRequest`; resolves with the result. */
  request(message: RouteMessage, method?: string): Promise<any>;
  /** Receive every output of a server route; one subscription per route, kept across reconnections. */
  subscribe(route: string, callback?: ((value: any) => void) | string, args?: any): Promise<number>;
  /** End the subscription on `route` (default: ours); resolves with whether the server had it. With `shared`, while another tab subscribes to `route`, only this tab's callbacks end. */
  unsubscribe(route: string, sub?: number): Promise<boolean>;
  /** Close the stream for good; returns whether it was open. */
  terminate(): boolean;

  /** Add or replace a browser route (with `shared`, add routes this way, so that the other tabs hear of them). */
  addRoute(name: string, route: RouteEntry): this;
  /** Run a browser route here; the server's subscribers to it get the result. */
  call(name: string, args?: any, method?: string): Promise<any>;
  /** Give the server's subscribers to browser route `name` an output (undefined is none). */
  emit(name: string, value: any): void;
}

/** Open a connection to a txgraphsse endpoint. */
export declare function openSSE(options: GraphSSEOptions): GraphSSE;

export default GraphSSE;
