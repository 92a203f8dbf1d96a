// Switchboard's browser client: one ES module, no build step, no dependencies.
//
//   import { Switchboard } from "/client/switchboard.js";
//   const chat = new Switchboard("/chat/lobby");
//   chat.on("status", (status, detail) => ...);   // connecting, open, reconnecting, closed
//   chat.on("message", (data, position) => ...);  // position: {group, epoch, offset} or null
//   chat.on("resync", (reason, group) => ...);    // missed messages could not be recovered
//   chat.send({ text: "hi" });                    // queued (bounded) while reconnecting
//   chat.close();
//
// It reconnects by itself with exponential backoff and full jitter (capped), and resumes every
// recoverable group from the last position it got there: messages of a recoverable group
// arrive as {"group":..,"epoch":..,"offset":..,"data":..}; the client keeps the last
// epoch:offset of each group and reconnects with ?since=GROUP:EPOCH:OFFSET, one per group. The
// server's join report, {"group":..,"position":"E:O","recovery":..}, tells it where the
// group's stream stood at the join and whether the missed messages were recovered.

/** Human reasons for the close codes a user may meet. */
const CLOSE_REASONS = {
  1000: "closed",
  1001: "the server is going away (restart or shutdown)",
  1002: "protocol error",
  1003: "the server cannot take this kind of message",
  1005: "closed without a code",
  1006: "the connection was lost",
  1007: "the message was not valid (bad JSON or text)",
  1008: "refused by the server's policy (a limit, or too slow to read)",
  1009: "the message was too large",
  1010: "an extension was missing",
  1011: "the server hit an error",
  1012: "the server is restarting",
  1013: "the server is overloaded: try again later",
  1014: "bad gateway",
  1015: "TLS handshake failed",
};

/** A human reason for `code` (with the server's own reason, when it gave one). */
export function closeReason(code, reason = "") {
  let text = CLOSE_REASONS[code];
  if (!text) {
    text = code >= 4000 && code <= 4999 ? "closed by the application" : "closed (" + code + ")";
  }
  return reason ? text + ": " + reason : text;
}

/**
 * The delay before reconnection attempt `attempt` (0 for the first): "full jitter", a random
 * delay between 0 and min(max, min * 2^attempt) milliseconds.
 */
export function backoffDelay(attempt, { min = 250, max = 10000 } = {}, random = Math.random) {
  const cap = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/** Close codes after which reconnecting is pointless (the same request would be refused). */
const FINAL_CODES = new Set([1002, 1003, 1007, 1008, 1009, 1010]);

export class Switchboard {
  /**
   * @param {string} url the route, absolute (ws://, wss://, http://, https://) or relative to
   *   the page (`/chat/lobby`).
   * @param {object} options `maxQueue` (messages kept while not connected, default 100),
   *   `backoff` ({min, max} in ms), `positions` ([{group, epoch, offset}] to resume from), and, for
   *   tests, `WebSocket`, `random`, `setTimeout`, `clearTimeout`, `location`.
   */
  constructor(url, options = {}) {
    this.options = {
      maxQueue: 100,
      backoff: { min: 250, max: 10000 },
      WebSocket: globalThis.WebSocket,
      random: Math.random,
      setTimeout: globalThis.setTimeout.bind(globalThis),
      clearTimeout: globalThis.clearTimeout.bind(globalThis),
      location: globalThis.location,
      ...options,
    };
    this.url = url;
    this.status = "connecting";
    /** The last position had in each recoverable group: group -> {group, epoch, offset}. */
    this.positions = new Map((options.positions || []).map((p) => [p.group, { ...p }]));
    this.queue = [];
    this.dropped = 0;
    this.attempt = 0;
    this.listeners = { status: [], message: [], resync: [] };
    this.socket = null;
    this.timer = null;
    this.closing = false;
    this.connect();
  }

  /** Listens to `status`, `message` or `resync`. Returns a function that stops listening. */
  on(event, listener) {
    const list = this.listeners[event];
    if (!list) throw new Error("unknown event " + event + ": status, message or resync");
    list.push(listener);
    return () => {
      const at = list.indexOf(listener);
      if (at >= 0) list.splice(at, 1);
    };
  }

  /**
   * Sends `data` as JSON now, or when connected again. Returns false when the queue is full
   * (the message is dropped, and counted in `dropped`).
   */
  send(data) {
    const text = JSON.stringify(data);
    if (this.status === "open" && this.socket.readyState === 1) {
      this.socket.send(text);
      return true;
    }
    if (this.closing) return false;
    if (this.queue.length >= this.options.maxQueue) {
      this.dropped += 1;
      return false;
    }
    this.queue.push(text);
    return true;
  }

  /** Closes for good: no reconnection, the queue is dropped. */
  close(code = 1000, reason = "") {
    this.closing = true;
    this.queue = [];
    if (this.timer !== null) {
      this.options.clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.socket && this.socket.readyState <= 1) this.socket.close(code, reason);
    this.setStatus("closed", closeReason(code, reason));
  }

  /** The URL of the next connection: the route with a `since` for each group's position. */
  address() {
    const base = this.options.location ? this.options.location.href : undefined;
    const url = new URL(this.url, base);
    if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol === "https:") url.protocol = "wss:";
    url.searchParams.delete("since");
    for (const { group, epoch, offset } of this.positions.values()) {
      url.searchParams.append("since", group + ":" + epoch + ":" + offset);
    }
    return url.toString();
  }

  connect() {
    const socket = new this.options.WebSocket(this.address());
    this.socket = socket;
    // Events of a socket this client has replaced are ignored (no stale close greying out
    // a newer connection).
    const current = () => this.socket === socket && !this.closing;
    socket.onopen = () => {
      if (!current()) return;
      this.attempt = 0;
      this.setStatus("open", "");
      const queued = this.queue;
      this.queue = [];
      for (const text of queued) socket.send(text);
    };
    socket.onmessage = (event) => {
      if (current()) this.receive(event.data);
    };
    socket.onclose = (event) => {
      if (!current()) return;
      this.socket = null;
      const why = closeReason(event.code, event.reason);
      if (FINAL_CODES.has(event.code) || (event.code >= 4000 && event.code <= 4499)) {
        this.closing = true;
        this.setStatus("closed", why);
        return;
      }
      const delay = backoffDelay(this.attempt, this.options.backoff, this.options.random);
      this.attempt += 1;
      this.setStatus("reconnecting", why);
      this.timer = this.options.setTimeout(() => {
        this.timer = null;
        if (!this.closing) {
          this.setStatus("connecting", "");
          this.connect();
        }
      }, delay);
    };
  }

  receive(text) {
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      this.emit("message", text, null);
      return;
    }
    if (isEnvelope(value)) {
      const known = this.positions.get(value.group);
      // A server that lags the one this client left may hand back what it already has.
      if (known && known.epoch === value.epoch && value.offset <= known.offset) return;
      const position = { group: value.group, epoch: value.epoch, offset: value.offset };
      this.positions.set(value.group, position);
      this.emit("message", value.data, position);
      return;
    }
    if (isJoinReport(value)) {
      this.joined(value);
      return;
    }
    this.emit("message", value, null);
  }

  /** The server's join report: where the group's stream stood, and what was recovered. */
  joined(report) {
    const [epoch, offset] = splitPosition(report.position);
    const group = report.group;
    const known = this.positions.get(group);
    // Messages after the join may have arrived before the report: never go back.
    if (!known || known.epoch !== epoch || known.offset < offset) {
      this.positions.set(group, { group, epoch, offset });
    }
    if (report.recovery === "not_recoverable") {
      this.emit("resync", report.reason || "missed messages could not be recovered", group);
    }
  }

  setStatus(status, detail) {
    if (this.status === status && status !== "reconnecting") return;
    this.status = status;
    this.emit("status", status, detail);
  }

  emit(event, ...args) {
    for (const listener of [...this.listeners[event]]) {
      try {
        listener(...args);
      } catch (error) {
        // One failing listener does not stop the others (nor the client).
        console.error("switchboard listener failed", error);
      }
    }
  }
}

function isEnvelope(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    typeof value.group === "string" &&
    typeof value.epoch === "string" &&
    Number.isInteger(value.offset) &&
    "data" in value &&
    Object.keys(value).length === 4
  );
}

function isJoinReport(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    typeof value.group === "string" &&
    typeof value.position === "string" &&
    typeof value.recovery === "string" &&
    splitPosition(value.position) !== null
  );
}

function splitPosition(text) {
  const at = typeof text === "string" ? text.lastIndexOf(":") : -1;
  if (at <= 0) return null;
  const offset = Number(text.slice(at + 1));
  return Number.isInteger(offset) && offset >= 0 ? [text.slice(0, at), offset] : null;
}
