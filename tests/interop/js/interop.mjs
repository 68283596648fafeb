// What a foreign client, nats.js (v2, for Node), can do against a NATS +
// JetStream server.
//
//     node interop.mjs nats://127.0.0.1:4222
//
// Runs groups of checks (JetStream publish, pull consume, KV, request/reply,
// core pub/sub, stream admin), each on streams, buckets and subjects with a
// random suffix of this run, so runs can share a server. Every check prints
// `ok <name>`; a failed one prints `FAIL <name>: <detail>` and ends its
// group (the other groups still run). Exits 0 only when every check passed.
//
// The same program runs against a real nats-server (the oracle: everything
// here passes against nats-server 2.9.10) and against `durabus serve`.
// tests/interop/install.sh installs the pinned `nats` package into
// target/interop/js (or $DURABUS_INTEROP_DIR/js), where this loads it from.

import { createRequire } from "node:module";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { isDeepStrictEqual, inspect } from "node:util";

const here = path.dirname(fileURLToPath(import.meta.url));
const installDir = path.join(
  process.env.DURABUS_INTEROP_DIR ?? path.join(here, "..", "..", "..", "target", "interop"),
  "js",
);
const require = createRequire(path.join(installDir, "package.json"));
const { connect, headers, AckPolicy, ErrorCode, StringCodec } = require("nats");
const natsVersion = require("nats/package.json").version;

const sc = StringCodec();
const RUN = randomBytes(4).toString("hex"); // this run's suffix
const PREFIX = `interop.js.${RUN}`; // subjects of this run
const GROUP_TIMEOUT_MS = 60_000; // a hang must fail, not block the test forever

class CheckFailed extends Error {
  constructor(name, detail) {
    super(`${name}: ${detail}`);
    this.check = name;
    this.detail = detail;
  }
}

/** Prints `ok <name>` or throws CheckFailed; counts the passes. */
class Checks {
  passed = 0;
  current = "connect";

  ok(name, cond = true, detail = "condition false") {
    this.current = name;
    if (!cond) throw new CheckFailed(name, detail);
    this.passed++;
    console.log(`ok ${name}`);
  }

  equal(name, got, want) {
    this.ok(name, isDeepStrictEqual(got, want), `got ${show(got)}, want ${show(want)}`);
  }

  /** Awaits `promise`, which must reject with an error that `matches`; returns the error. */
  async rejects(name, promise, matches, want) {
    this.current = name;
    let result;
    try {
      result = await promise;
    } catch (err) {
      if (!matches(err)) throw new CheckFailed(name, `failed with ${describe(err)}, want ${want}`);
      this.ok(name);
      return err;
    }
    throw new CheckFailed(name, `returned ${show(result)}, want ${want}`);
  }
}

const show = (v) => inspect(v, { depth: 4, breakLength: Infinity });
const describe = (err) => `${err?.name}: ${err?.message} (code ${err?.code}, api_error ${show(err?.api_error)})`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const apiErrCode = (err) => err?.api_error?.err_code;

/** Polls `pred` until it returns something truthy or `ms` pass; returns its last value. */
async function eventually(pred, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await pred();
    if (value || Date.now() > deadline) return value;
    await sleep(50);
  }
}

/** All that an async iterator yields. */
async function collect(iter) {
  const out = [];
  for await (const item of iter) out.push(item);
  return out;
}

// --- JetStream publish -------------------------------------------------------

/** A stream made by the client; publish acks; Nats-Msg-Id de-duplication. */
async function jsPublish(nc, c) {
  const js = nc.jetstream();
  const jsm = await nc.jetstreamManager();
  const stream = `JS_PUB_${RUN}`;
  const subject = `${PREFIX}.orders.new`;
  await jsm.streams.add({ name: stream, subjects: [`${PREFIX}.orders.>`] });
  try {
    c.ok("js_publish.stream_created");
    const ack = await js.publish(subject, sc.encode("order-1"), { msgID: "order-1" });
    c.equal("js_publish.ack", [ack.stream, ack.seq, ack.duplicate], [stream, 1, false]);
    const again = await js.publish(subject, sc.encode("order-1"), { msgID: "order-1" });
    c.equal("js_publish.duplicate_msg_id", [again.stream, again.seq, again.duplicate], [stream, 1, true]);
    const other = await js.publish(subject, sc.encode("order-2"), { msgID: "order-2" });
    c.equal("js_publish.next_seq", [other.seq, other.duplicate], [2, false]);
    const info = await jsm.streams.info(stream);
    c.equal("js_publish.stored_once", info.state.messages, 2);
    await c.rejects(
      "js_publish.no_stream_fails",
      js.publish(`${PREFIX}.nostream`, sc.encode("x"), { timeout: 2000 }),
      (err) => err.code === ErrorCode.NoResponders,
      "no responders (503)",
    );
  } finally {
    await jsm.streams.delete(stream);
  }
}

// --- pull consumer, explicit acks ---------------------------------------------

/** A durable pull consumer: fetch a batch, ack, nak and redelivery, empty fetch. */
async function pullConsume(nc, c) {
  const js = nc.jetstream();
  const jsm = await nc.jetstreamManager();
  const stream = `JS_PULL_${RUN}`;
  const subject = `${PREFIX}.jobs`;
  await jsm.streams.add({ name: stream, subjects: [subject] });
  try {
    for (let i = 1; i <= 3; i++) await js.publish(subject, sc.encode(`job-${i}`));
    await jsm.consumers.add(stream, {
      durable_name: "worker",
      ack_policy: AckPolicy.Explicit,
      ack_wait: 30_000_000_000, // ns
    });
    const consumer = await js.consumers.get(stream, "worker");
    c.ok("pull.durable_created");

    const msgs = await collect(await consumer.fetch({ max_messages: 3, expires: 5000 }));
    c.equal("pull.fetch_batch", msgs.map((m) => sc.decode(m.data)), ["job-1", "job-2", "job-3"]);
    c.equal(
      "pull.metadata",
      msgs.map((m) => [m.seq, m.info.deliveryCount, m.subject]),
      [1, 2, 3].map((seq) => [seq, 1, subject]),
    );
    for (const m of msgs) m.ack();

    const acked = await eventually(async () => {
      const info = await consumer.info();
      return info.num_ack_pending === 0 && info.ack_floor.stream_seq === 3 ? info : null;
    });
    c.ok("pull.consumer_info_acked", acked !== null, show(await consumer.info()));
    c.equal("pull.nothing_pending", [acked.num_pending, acked.delivered.stream_seq], [0, 3]);

    await js.publish(subject, sc.encode("job-4"));
    const first = await consumer.next({ expires: 5000 });
    c.equal("pull.first_delivery", [sc.decode(first?.data ?? []), first?.info.deliveryCount], ["job-4", 1]);
    first.nak();
    const again = await consumer.next({ expires: 5000 });
    c.equal(
      "pull.nak_redelivered",
      [sc.decode(again?.data ?? []), again?.seq, again?.info.deliveryCount, again?.redelivered],
      ["job-4", 4, 2, true],
    );
    c.equal("pull.ack_ack", await again.ackAck(), true); // an ack the server confirms

    const started = Date.now();
    const none = await collect(await consumer.fetch({ max_messages: 5, expires: 1000 }));
    c.equal("pull.empty_fetch_returns_nothing", none.length, 0);
    const took = Date.now() - started;
    c.ok("pull.empty_fetch_prompt", took < 4000, `took ${took}ms for a 1s fetch`);
    c.equal("pull.empty_next_is_null", await consumer.next({ expires: 1000 }), null);

    const info = await consumer.info();
    c.equal("pull.final_ack_floor", [info.ack_floor.stream_seq, info.num_ack_pending], [4, 0]);
  } finally {
    await jsm.streams.delete(stream);
  }
}

// --- key-value -------------------------------------------------------------------

/** A KV bucket: put/get, CAS update, create, delete, history, keys, watch. */
async function keyValue(nc, c) {
  const js = nc.jetstream();
  const bucket = `js_kv_${RUN}`;
  const kv = await js.views.kv(bucket, { history: 5 });
  try {
    c.ok("kv.bucket_created");
    const r1 = await kv.put("color", sc.encode("red"));
    let entry = await kv.get("color");
    c.equal("kv.put_get", [entry?.key, entry?.string(), entry?.revision, entry?.operation], ["color", "red", r1, "PUT"]);
    c.equal("kv.get_missing_key_is_null", await kv.get("never-written"), null);

    const r2 = await kv.update("color", sc.encode("blue"), r1);
    c.ok("kv.update_cas", r2 > r1, `revision ${r2} after ${r1}`);
    c.equal("kv.get_updated", (await kv.get("color"))?.string(), "blue");
    await c.rejects(
      "kv.update_wrong_revision_fails",
      kv.update("color", sc.encode("green"), r1),
      (err) => apiErrCode(err) === 10071,
      "wrong last sequence (err_code 10071)",
    );
    c.equal("kv.failed_cas_changed_nothing", (await kv.get("color"))?.revision, r2);

    await kv.create("size", sc.encode("L"));
    c.ok("kv.create_new_key");
    await c.rejects(
      "kv.create_existing_fails",
      kv.create("size", sc.encode("XL")),
      (err) => apiErrCode(err) === 10071,
      "wrong last sequence (err_code 10071)",
    );
    c.equal("kv.keys", (await collect(await kv.keys())).sort(), ["color", "size"]);

    await kv.delete("size");
    entry = await kv.get("size");
    c.equal("kv.get_deleted_is_delete_marker", entry?.operation, "DEL");
    c.equal("kv.keys_after_delete", await collect(await kv.keys()), ["color"]);

    const history = await collect(await kv.history({ key: "color" }));
    c.equal(
      "kv.history",
      history.map((e) => [e.string(), e.revision, e.operation]),
      [["red", r1, "PUT"], ["blue", r2, "PUT"]],
    );

    // A watch: the latest value of each key (delete markers too), then
    // initializedFn (caught up), then what is put after the watch started.
    const seen = [];
    let initialized = false;
    const watcher = await kv.watch({ initializedFn: () => (initialized = true) });
    const watching = (async () => {
      for await (const e of watcher) seen.push([e.key, e.string(), e.operation, e.revision]);
    })();
    await eventually(() => initialized);
    c.ok("kv.watch_initialized", initialized, "initializedFn not called in 5s");
    c.equal(
      "kv.watch_initial_values",
      seen.map(([key, value, op]) => [key, value, op]).sort(),
      [["color", "blue", "PUT"], ["size", "", "DEL"]],
    );
    const r3 = await kv.put("color", sc.encode("yellow"));
    await eventually(() => seen.length >= 3);
    c.equal("kv.watch_live_put", seen[2], ["color", "yellow", "PUT", r3]);
    watcher.stop();
    await watching;

    const status = await kv.status();
    c.equal("kv.status", [status.bucket, status.history, status.values], [bucket, 5, 5]); // 5 revisions, all kept
  } finally {
    await kv.destroy();
  }
}

// --- request/reply -------------------------------------------------------------------

/** A responder answers a request; a request nobody listens to fails fast. */
async function requestReply(nc, c) {
  const subject = `${PREFIX}.svc.echo`;
  const sub = nc.subscribe(subject, { callback: (_err, msg) => msg.respond(sc.encode(`echo:${sc.decode(msg.data)}`)) });
  await nc.flush();
  const reply = await nc.request(subject, sc.encode("hi"), { timeout: 5000 });
  c.equal("request.reply", sc.decode(reply.data), "echo:hi");

  const started = Date.now();
  await c.rejects(
    "request.no_responders",
    nc.request(`${PREFIX}.svc.nobody`, sc.encode("hi"), { timeout: 10_000 }),
    (err) => err.code === ErrorCode.NoResponders,
    "no responders (503)",
  );
  const took = Date.now() - started;
  c.ok("request.no_responders_fast", took < 2000, `took ${took}ms (a 10s timeout)`);
  sub.unsubscribe();
}

// --- core pub/sub ------------------------------------------------------------------------

/** A queue group shares messages (each to one member); headers round-trip. */
async function corePubsub(nc, c) {
  const subject = `${PREFIX}.events`;
  const count = 30;
  const members = { a: [], b: [], c: [] };
  const everyone = [];
  const keepInto = (into) => ({ callback: (_err, msg) => into.push(sc.decode(msg.data)) });
  const subs = Object.values(members).map((got) => nc.subscribe(subject, { queue: "workers", ...keepInto(got) }));
  subs.push(nc.subscribe(subject, keepInto(everyone))); // not in the group
  await nc.flush();
  const sent = Array.from({ length: count }, (_, i) => `event-${i}`);
  for (const data of sent) nc.publish(subject, sc.encode(data));
  await nc.flush();

  const groupTotal = () => Object.values(members).reduce((n, got) => n + got.length, 0);
  await eventually(() => groupTotal() >= count && everyone.length >= count);
  await sleep(200); // time for a duplicate to show up
  c.equal("pubsub.queue_group_each_once", Object.values(members).flat().sort(), [...sent].sort());
  c.equal("pubsub.plain_subscriber_gets_all", everyone, sent);
  subs.forEach((s) => s.unsubscribe());

  // Headers: several (one of them twice), and with an empty payload.
  const received = [];
  const sub = nc.subscribe(`${PREFIX}.hdr`, { callback: (_err, msg) => received.push(msg) });
  await nc.flush();
  const h = headers();
  h.set("X-Trace-Id", "abc-123");
  h.append("X-Tag", "one");
  h.append("X-Tag", "two");
  nc.publish(`${PREFIX}.hdr`, sc.encode("payload"), { headers: h });
  await eventually(() => received.length >= 1);
  const got = received[0];
  c.equal(
    "pubsub.headers_round_trip",
    [sc.decode(got?.data ?? []), got?.headers?.get("X-Trace-Id"), got?.headers?.values("X-Tag")],
    ["payload", "abc-123", ["one", "two"]],
  );
  const only = headers();
  only.set("X-Only", "header");
  nc.publish(`${PREFIX}.hdr`, undefined, { headers: only });
  await eventually(() => received.length >= 2);
  c.equal("pubsub.headers_empty_payload", [received[1]?.data.length, received[1]?.headers?.get("X-Only")], [0, "header"]);
  sub.unsubscribe();
}

// --- stream admin ------------------------------------------------------------------------

/** Stream info and list, get and delete a message by sequence, purge. */
async function streamAdmin(nc, c) {
  const js = nc.jetstream();
  const jsm = await nc.jetstreamManager();
  const stream = `JS_ADMIN_${RUN}`;
  await jsm.streams.add({ name: stream, subjects: [`${PREFIX}.admin.>`] });
  try {
    await js.publish(`${PREFIX}.admin.a`, sc.encode("one"));
    const h = headers();
    h.set("X-Kind", "second");
    await js.publish(`${PREFIX}.admin.b`, sc.encode("two"), { headers: h });
    await js.publish(`${PREFIX}.admin.c`, sc.encode("three"));

    let info = await jsm.streams.info(stream);
    c.equal(
      "admin.stream_info",
      [info.config.name, info.config.subjects, info.state.messages, info.state.first_seq, info.state.last_seq],
      [stream, [`${PREFIX}.admin.>`], 3, 1, 3],
    );
    const names = (await collect(jsm.streams.list())).map((si) => si.config.name);
    c.ok("admin.stream_list", names.includes(stream), `${stream} not in ${show(names)}`);
    const listedNames = await collect(jsm.streams.names());
    c.ok("admin.stream_names", listedNames.includes(stream), `${stream} not in ${show(listedNames)}`);

    const sm = await jsm.streams.getMessage(stream, { seq: 2 });
    c.equal(
      "admin.get_msg_by_seq",
      [sm.seq, sm.subject, sc.decode(sm.data), sm.header?.get("X-Kind")],
      [2, `${PREFIX}.admin.b`, "two", "second"],
    );
    const last = await jsm.streams.getMessage(stream, { last_by_subj: `${PREFIX}.admin.c` });
    c.equal("admin.get_last_msg_for_subject", [last.seq, sc.decode(last.data)], [3, "three"]);

    c.equal("admin.delete_msg", await jsm.streams.deleteMessage(stream, 2), true);
    await c.rejects(
      "admin.get_deleted_msg_fails",
      jsm.streams.getMessage(stream, { seq: 2 }),
      (err) => apiErrCode(err) === 10037,
      "no message found (err_code 10037)",
    );
    info = await jsm.streams.info(stream);
    c.equal("admin.after_delete", [info.state.messages, info.state.first_seq, info.state.last_seq], [2, 1, 3]);

    const purged = await jsm.streams.purge(stream);
    c.equal("admin.purge", [purged.success, purged.purged], [true, 2]);
    info = await jsm.streams.info(stream);
    c.equal("admin.after_purge", [info.state.messages, info.state.first_seq], [0, 4]);
    const ack = await js.publish(`${PREFIX}.admin.a`, sc.encode("four"));
    c.equal("admin.seq_continues_after_purge", ack.seq, 4);
  } finally {
    c.equal("admin.delete_stream", await jsm.streams.delete(stream), true);
  }
  await c.rejects(
    "admin.deleted_stream_not_found",
    jsm.streams.info(stream),
    (err) => apiErrCode(err) === 10059,
    "stream not found (err_code 10059)",
  );
}

const GROUPS = [jsPublish, pullConsume, keyValue, requestReply, corePubsub, streamAdmin];

async function main(url) {
  const c = new Checks();
  let nc;
  try {
    nc = await connect({ servers: url, timeout: 5000, reconnect: false });
  } catch (err) {
    console.log(`FAIL connect: ${describe(err)}`);
    return 1;
  }
  c.ok("connect");
  let failed = 0;
  for (const group of GROUPS) {
    c.current = group.name;
    let timer;
    const hung = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${group.name} hung for ${GROUP_TIMEOUT_MS}ms`)), GROUP_TIMEOUT_MS);
    });
    try {
      await Promise.race([group(nc, c), hung]);
    } catch (err) {
      failed++;
      if (err instanceof CheckFailed) console.log(`FAIL ${err.check}: ${err.detail}`);
      else console.log(`FAIL ${c.current}: ${describe(err)}`);
    } finally {
      clearTimeout(timer);
    }
  }
  await nc.close();
  console.log(`nats.js ${natsVersion}: ${c.passed} checks passed, ${failed} groups failed`);
  return failed === 0 ? 0 : 1;
}

if (process.argv.length !== 3) {
  console.error("usage: node interop.mjs NATS_URL");
  process.exit(2);
}
process.exitCode = await main(process.argv[2]);
