// Unit tests of the browser client against a fake WebSocket and fake timers:
// `node --test client/` (Node 18 or later; no packages).

import { test } from "node:test";
import assert from "node:assert/strict";

import { Switchboard, backoffDelay, closeReason } from "./switchboard.js";

/** A WebSocket the test drives: it opens, receives and closes when told. */
class FakeSocket {
  static all = [];

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeSocket.all.push(this);
  }

  send(text) {
    assert.equal(this.readyState, 1, "send only when open");
    this.sent.push(text);
  }

  close(code, reason) {
    this.closedWith = [code, reason];
    this.readyState = 3;
  }

  // What the server (or the network) does:
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  message(value) {
    this.onmessage?.({ data: typeof value === "string" ? value : JSON.stringify(value) });
  }

  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
}

/** Timers the test fires by hand. */
function fakeTimers() {
  const pending = [];
  return {
    pending,
    setTimeout: (fn, delay) => {
      pending.push({ fn, delay });
      return pending.length;
    },
    clearTimeout: (id) => {
      pending[id - 1] = null;
    },
    fire() {
      const next = pending.findIndex((t) => t !== null);
      assert.ok(next >= 0, "a timer is pending");
      const { fn } = pending[next];
      pending[next] = null;
      fn();
    },
    live() {
      return pending.filter((t) => t !== null);
    },
  };
}

function client(options = {}) {
  FakeSocket.all = [];
  const timers = fakeTimers();
  const statuses = [];
  const messages = [];
  const resyncs = [];
  const sb = new Switchboard("ws://example.test/chat/lobby", {
    WebSocket: FakeSocket,
    random: () => 0.5,
    setTimeout: timers.setTimeout,
    clearTimeout: timers.clearTimeout,
    location: undefined,
    ...options,
  });
  sb.on("status", (status, detail) => statuses.push([status, detail]));
  sb.on("message", (data, position) => messages.push([data, position]));
  sb.on("resync", (reason, group) => resyncs.push([reason, group]));
  return { sb, timers, statuses, messages, resyncs, socket: () => FakeSocket.all.at(-1) };
}

test("backoff is full jitter under an exponential cap", () => {
  const bounds = { min: 100, max: 2000 };
  assert.equal(backoffDelay(0, bounds, () => 0), 0);
  assert.equal(backoffDelay(0, bounds, () => 0.999), 99);
  assert.equal(backoffDelay(3, bounds, () => 0.999), 799);
  assert.equal(backoffDelay(10, bounds, () => 0.999), 1998, "capped at max");
  assert.equal(backoffDelay(1000, bounds, () => 0.5), 1000, "no overflow for large attempts");
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(4, bounds);
    assert.ok(d >= 0 && d < 1600);
  }
});

test("it reconnects after a lost connection, with growing delays, and says so", () => {
  const { timers, statuses, socket } = client({ backoff: { min: 100, max: 1000 } });
  socket().open();
  socket().drop(1006);
  assert.equal(timers.live().length, 1);
  assert.equal(timers.live()[0].delay, 50, "half of min for the first attempt");
  timers.fire();
  socket().drop(1001, "server shutting down");
  assert.equal(timers.live()[0].delay, 100, "then half of 2 * min");
  timers.fire();
  socket().open();
  assert.deepEqual(statuses, [
    ["open", ""],
    ["reconnecting", "the connection was lost"],
    ["connecting", ""],
    ["reconnecting", "the server is going away (restart or shutdown): server shutting down"],
    ["connecting", ""],
    ["open", ""],
  ]);
  // A successful open resets the backoff.
  socket().drop(1006);
  assert.equal(timers.live()[0].delay, 50);
});

test("it resumes from the last position it got, and never goes back", () => {
  const { sb, timers, messages, resyncs, socket } = client();
  const at = (epoch, offset) => ({ group: "chat_lobby", epoch, offset });
  const lobby = () => sb.positions.get("chat_lobby");
  assert.equal(socket().url, "ws://example.test/chat/lobby", "no position at first");
  socket().open();
  socket().message({ group: "chat_lobby", epoch: "e1", offset: 7, data: { text: "a" } });
  socket().message({ group: "chat_lobby", epoch: "e1", offset: 8, data: { text: "b" } });
  // The join report comes after live messages: it does not move the position back.
  socket().message({ group: "chat_lobby", position: "e1:6", recovery: "fresh", reason: null });
  assert.deepEqual(lobby(), at("e1", 8));
  assert.deepEqual(messages, [
    [{ text: "a" }, at("e1", 7)],
    [{ text: "b" }, at("e1", 8)],
  ]);
  socket().drop(1006);
  timers.fire();
  assert.equal(socket().url, "ws://example.test/chat/lobby?since=chat_lobby%3Ae1%3A8");
  socket().open();
  socket().message({ group: "chat_lobby", position: "e1:9", recovery: "recovered" });
  assert.deepEqual(lobby(), at("e1", 9));
  // Not recoverable: told once, and the position is the new stream's.
  socket().drop(1006);
  timers.fire();
  socket().open();
  socket().message({
    group: "chat_lobby",
    position: "e2:3",
    recovery: "not_recoverable",
    reason: "EpochChanged",
  });
  assert.deepEqual(resyncs, [["EpochChanged", "chat_lobby"]]);
  assert.deepEqual(lobby(), at("e2", 3));
  // A message it already has (a lagging server) is not handed on twice.
  socket().message({ group: "chat_lobby", epoch: "e2", offset: 3, data: "again" });
  assert.equal(messages.length, 2);
  // Anything else is a plain message, parsed when it is JSON.
  socket().message({ room: "lobby" });
  socket().message({ epoch: "e2", offset: 4, data: "no group: not an envelope" });
  socket().message("not json");
  assert.deepEqual(messages.slice(2), [
    [{ room: "lobby" }, null],
    [{ epoch: "e2", offset: 4, data: "no group: not an envelope" }, null],
    ["not json", null],
  ]);
});

test("it resumes every recoverable group of its socket, each from its own position", () => {
  const { sb, timers, messages, socket } = client({
    positions: [{ group: "news", epoch: "n1", offset: 40 }],
  });
  assert.equal(socket().url, "ws://example.test/chat/lobby?since=news%3An1%3A40");
  socket().open();
  socket().message({ group: "chat:lobby", epoch: "c1", offset: 5, data: "hi" });
  socket().message({ group: "news", epoch: "n1", offset: 41, data: "headline" });
  // The same epoch and offset in another group is another message.
  socket().message({ group: "other", epoch: "c1", offset: 5, data: "other stream" });
  assert.deepEqual(
    messages.map(([data]) => data),
    ["hi", "headline", "other stream"],
  );
  socket().drop(1001);
  timers.fire();
  const since = new URL(socket().url).searchParams.getAll("since");
  assert.deepEqual(since.sort(), ["chat:lobby:c1:5", "news:n1:41", "other:c1:5"]);
});

test("messages sent while reconnecting wait in a bounded queue", () => {
  const { sb, timers, socket } = client({ maxQueue: 2 });
  assert.equal(sb.send({ n: 1 }), true);
  assert.equal(sb.send({ n: 2 }), true);
  assert.equal(sb.send({ n: 3 }), false, "past the bound");
  assert.equal(sb.dropped, 1);
  socket().open();
  assert.deepEqual(socket().sent, ['{"n":1}', '{"n":2}'], "in order, once open");
  assert.equal(sb.send({ n: 4 }), true);
  assert.deepEqual(socket().sent.at(-1), '{"n":4}');
  socket().drop(1006);
  sb.send({ n: 5 });
  timers.fire();
  socket().open();
  assert.deepEqual(socket().sent, ['{"n":5}']);
});

test("a refusal by policy or a bad message ends it: no reconnection", () => {
  for (const code of [1008, 1009, 1007, 4001]) {
    const { sb, timers, statuses, socket } = client();
    socket().open();
    socket().drop(code, "nope");
    assert.equal(timers.live().length, 0, `no retry after ${code}`);
    assert.equal(sb.status, "closed");
    assert.deepEqual(statuses.at(-1), ["closed", closeReason(code, "nope")]);
  }
});

test("close() ends it cleanly, and a replaced socket's late events are ignored", () => {
  const { sb, timers, statuses, messages, socket } = client();
  const first = socket();
  first.open();
  first.drop(1006);
  timers.fire();
  const second = socket();
  second.open();
  // The first socket's late events change nothing.
  first.message({ group: "g", epoch: "e1", offset: 1, data: "late" });
  first.onclose?.({ code: 1006, reason: "" });
  assert.equal(sb.status, "open");
  assert.equal(messages.length, 0);
  sb.close();
  assert.deepEqual(second.closedWith, [1000, ""]);
  assert.deepEqual(statuses.at(-1), ["closed", "closed"]);
  second.drop(1000);
  assert.equal(timers.live().length, 0, "no reconnection after close()");
  assert.equal(sb.send({ n: 1 }), false);
});

test("close codes have human reasons", () => {
  assert.equal(closeReason(1001), "the server is going away (restart or shutdown)");
  assert.equal(closeReason(1013), "the server is overloaded: try again later");
  assert.equal(closeReason(1009, "64 KiB at most"), "the message was too large: 64 KiB at most");
  assert.equal(closeReason(4403), "closed by the application");
  assert.equal(closeReason(3999), "closed (3999)");
});
