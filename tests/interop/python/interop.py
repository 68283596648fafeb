"""What a foreign client, nats-py, can do against a NATS + JetStream server.

    python interop.py nats://127.0.0.1:4222

Runs groups of checks (JetStream publish, pull consume, KV, request/reply,
core pub/sub, stream admin), each on streams, buckets and subjects with a
random suffix of this run, so runs can share a server. Every check prints
`ok <name>`; a failed one prints `FAIL <name>: <detail>` and ends its
group (the other groups still run). Exits 0 only when every check passed.

The same program runs against a real nats-server (the oracle: everything
here passes against nats-server 2.9.10) and against `durabus serve`.
Installed by tests/interop/install.sh (a venv with the pinned nats-py).
"""

import asyncio
import secrets
import sys
import time
from importlib.metadata import version

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig

# Slack for one group (a hang must fail, not block the test forever).
GROUP_TIMEOUT = 60.0

RUN = secrets.token_hex(4)  # this run's suffix
PREFIX = f"interop.py.{RUN}"  # subjects of this run


class CheckFailed(Exception):
    def __init__(self, name, detail):
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


class Checks:
    """Prints `ok <name>` or raises CheckFailed; counts the passes."""

    def __init__(self):
        self.passed = 0
        self.current = "connect"

    def ok(self, name, cond=True, detail=""):
        self.current = name
        if not cond:
            raise CheckFailed(name, detail or "condition false")
        self.passed += 1
        print(f"ok {name}", flush=True)

    def equal(self, name, got, want):
        self.ok(name, got == want, f"got {got!r}, want {want!r}")

    async def raises(self, name, exc_type, awaitable):
        """Awaits `awaitable`, which must raise `exc_type`; returns the error."""
        self.current = name
        try:
            result = await awaitable
        except exc_type as e:
            self.ok(name)
            return e
        except Exception as e:  # noqa: BLE001 - reported, not swallowed
            raise CheckFailed(name, f"raised {type(e).__name__}: {e!r}, want {exc_type.__name__}")
        raise CheckFailed(name, f"returned {result!r}, want {exc_type.__name__}")


async def eventually(pred, timeout=5.0):
    """Polls the async predicate until true or `timeout` s; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


# --- JetStream publish ------------------------------------------------------


async def js_publish(nc, c):
    """A stream made by the client; publish acks; Nats-Msg-Id de-duplication."""
    js, jsm = nc.jetstream(), nc.jsm()
    stream = f"PY_PUB_{RUN}"
    subject = f"{PREFIX}.orders.new"
    await jsm.add_stream(name=stream, subjects=[f"{PREFIX}.orders.>"])
    try:
        c.ok("js_publish.stream_created")
        ack = await js.publish(subject, b"order-1", headers={"Nats-Msg-Id": "order-1"})
        c.ok(
            "js_publish.ack",
            ack.stream == stream and ack.seq == 1 and not ack.duplicate,
            f"got {ack}, want stream {stream} seq 1 not duplicate",
        )
        again = await js.publish(subject, b"order-1", headers={"Nats-Msg-Id": "order-1"})
        c.ok(
            "js_publish.duplicate_msg_id",
            again.duplicate is True and again.seq == 1 and again.stream == stream,
            f"got {again}, want duplicate=True seq 1",
        )
        other = await js.publish(subject, b"order-2", headers={"Nats-Msg-Id": "order-2"})
        c.ok("js_publish.next_seq", other.seq == 2 and not other.duplicate, f"got {other}")
        info = await jsm.stream_info(stream)
        c.equal("js_publish.stored_once", info.state.messages, 2)
        await c.raises(
            "js_publish.no_stream_fails",
            nats.js.errors.NoStreamResponseError,
            js.publish(f"{PREFIX}.nostream", b"x", timeout=2),
        )
    finally:
        await jsm.delete_stream(stream)


# --- pull consumer, explicit acks -------------------------------------------


async def pull_consume(nc, c):
    """A durable pull consumer: fetch a batch, ack, nak and redelivery, empty fetch."""
    js, jsm = nc.jetstream(), nc.jsm()
    stream = f"PY_PULL_{RUN}"
    subject = f"{PREFIX}.jobs"
    await jsm.add_stream(name=stream, subjects=[subject])
    try:
        for i in range(1, 4):
            await js.publish(subject, f"job-{i}".encode())
        sub = await js.pull_subscribe(
            subject,
            durable="worker",
            stream=stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
        )
        c.ok("pull.durable_created")
        msgs = await sub.fetch(3, timeout=5)
        c.equal("pull.fetch_batch", [m.data for m in msgs], [b"job-1", b"job-2", b"job-3"])
        c.equal(
            "pull.metadata",
            [(m.metadata.sequence.stream, m.metadata.num_delivered) for m in msgs],
            [(1, 1), (2, 1), (3, 1)],
        )
        for m in msgs:
            await m.ack()

        async def all_acked():
            info = await sub.consumer_info()
            return info if info.num_ack_pending == 0 and info.ack_floor.stream_seq == 3 else None

        info = await eventually(all_acked)
        c.ok("pull.consumer_info_acked", info is not None, f"got {await sub.consumer_info()}")
        c.equal("pull.nothing_pending", (info.num_pending, info.delivered.stream_seq), (0, 3))

        await js.publish(subject, b"job-4")
        [first] = await sub.fetch(1, timeout=5)
        c.equal("pull.first_delivery", (first.data, first.metadata.num_delivered), (b"job-4", 1))
        await first.nak()
        [again] = await sub.fetch(1, timeout=5)
        c.equal(
            "pull.nak_redelivered",
            (again.data, again.metadata.sequence.stream, again.metadata.num_delivered),
            (b"job-4", 4, 2),
        )
        await again.ack_sync()  # an ack the server confirms
        c.ok("pull.ack_sync")

        started = time.monotonic()
        await c.raises("pull.empty_fetch_times_out", nats.errors.TimeoutError, sub.fetch(1, timeout=1))
        took = time.monotonic() - started
        c.ok("pull.empty_fetch_prompt", took < 4, f"took {took:.1f}s for a 1s fetch")
        await c.raises("pull.empty_batch_times_out", nats.errors.TimeoutError, sub.fetch(5, timeout=1))

        info = await sub.consumer_info()
        c.equal("pull.final_ack_floor", (info.ack_floor.stream_seq, info.num_ack_pending), (4, 0))
        await sub.unsubscribe()
    finally:
        await jsm.delete_stream(stream)


# --- key-value ---------------------------------------------------------------


async def key_value(nc, c):
    """A KV bucket: put/get, CAS update, create, delete, history, keys, watch."""
    js = nc.jetstream()
    bucket = f"py_kv_{RUN}"
    kv = await js.create_key_value(bucket=bucket, history=5)
    try:
        c.ok("kv.bucket_created")
        r1 = await kv.put("color", b"red")
        entry = await kv.get("color")
        c.equal("kv.put_get", (entry.key, entry.value, entry.revision), ("color", b"red", r1))
        await c.raises("kv.get_missing_key_fails", nats.js.errors.KeyNotFoundError, kv.get("never-written"))

        r2 = await kv.update("color", b"blue", last=r1)
        c.ok("kv.update_cas", r2 > r1, f"revision {r2} after {r1}")
        c.equal("kv.get_updated", (await kv.get("color")).value, b"blue")
        await c.raises(
            "kv.update_wrong_revision_fails",
            nats.js.errors.KeyWrongLastSequenceError,
            kv.update("color", b"green", last=r1),
        )
        c.equal("kv.failed_cas_changed_nothing", (await kv.get("color")).revision, r2)

        await kv.create("size", b"L")
        c.ok("kv.create_new_key")
        await c.raises(
            "kv.create_existing_fails",
            nats.js.errors.KeyWrongLastSequenceError,
            kv.create("size", b"XL"),
        )
        c.equal("kv.keys", sorted(await kv.keys()), ["color", "size"])

        await kv.delete("size")
        await c.raises("kv.get_deleted_fails", nats.js.errors.KeyNotFoundError, kv.get("size"))
        c.equal("kv.keys_after_delete", sorted(await kv.keys()), ["color"])

        history = await kv.history("color")
        c.equal(
            "kv.history",
            [(e.value, e.revision) for e in history],
            [(b"red", r1), (b"blue", r2)],
        )

        # A watch: the latest value of each key (delete markers too), then
        # None (caught up), then what is put after the watch started.
        watcher = await kv.watchall()
        initial = []
        while (entry := await watcher.updates(timeout=5)) is not None:
            initial.append((entry.key, entry.value, entry.operation))
        c.equal(
            "kv.watch_initial_values",
            sorted(initial),
            [("color", b"blue", None), ("size", b"", "DEL")],
        )
        r3 = await kv.put("color", b"yellow")
        entry = await watcher.updates(timeout=5)
        c.equal(
            "kv.watch_live_put",
            (entry.key, entry.value, entry.revision) if entry else None,
            ("color", b"yellow", r3),
        )
        await watcher.stop()

        status = await kv.status()
        c.equal("kv.status", (status.bucket, status.history, status.values), (bucket, 5, 5))  # 5 revisions, all kept
    finally:
        await js.delete_key_value(bucket)


# --- request/reply -------------------------------------------------------------


async def request_reply(nc, c):
    """A responder answers a request; a request nobody listens to fails fast."""
    subject = f"{PREFIX}.svc.echo"

    async def echo(msg):
        await msg.respond(b"echo:" + msg.data)

    sub = await nc.subscribe(subject, cb=echo)
    await nc.flush()
    reply = await nc.request(subject, b"hi", timeout=5)
    c.equal("request.reply", reply.data, b"echo:hi")

    started = time.monotonic()
    await c.raises(
        "request.no_responders",
        nats.errors.NoRespondersError,
        nc.request(f"{PREFIX}.svc.nobody", b"hi", timeout=10),
    )
    took = time.monotonic() - started
    c.ok("request.no_responders_fast", took < 2, f"took {took:.1f}s (a 10s timeout)")
    await sub.unsubscribe()


# --- core pub/sub ------------------------------------------------------------------


async def core_pubsub(nc, c):
    """A queue group shares messages (each to one member); headers round-trip."""
    subject = f"{PREFIX}.events"
    count = 30
    members = {name: [] for name in ("a", "b", "c")}
    everyone = []

    def collect(into):
        async def cb(msg):
            into.append(msg.data)

        return cb

    subs = [await nc.subscribe(subject, queue="workers", cb=collect(got)) for got in members.values()]
    subs.append(await nc.subscribe(subject, cb=collect(everyone)))  # not in the group
    await nc.flush()
    sent = [f"event-{i}".encode() for i in range(count)]
    for data in sent:
        await nc.publish(subject, data)
    await nc.flush()

    async def all_in():
        return sum(len(got) for got in members.values()) >= count and len(everyone) >= count

    await eventually(all_in)
    await asyncio.sleep(0.2)  # time for a duplicate to show up
    group = [data for got in members.values() for data in got]
    c.equal("pubsub.queue_group_each_once", sorted(group), sorted(sent))
    c.equal("pubsub.plain_subscriber_gets_all", everyone, sent)
    for sub in subs:
        await sub.unsubscribe()

    # Headers: several, and with an empty payload.
    received = asyncio.Queue()

    async def keep(msg):
        await received.put(msg)

    sub = await nc.subscribe(f"{PREFIX}.hdr", cb=keep)
    await nc.flush()
    sent_headers = {"X-Trace-Id": "abc-123", "X-Tenant": "acme"}
    await nc.publish(f"{PREFIX}.hdr", b"payload", headers=sent_headers)
    msg = await asyncio.wait_for(received.get(), 5)
    c.equal("pubsub.headers_round_trip", (msg.data, msg.headers), (b"payload", sent_headers))
    await nc.publish(f"{PREFIX}.hdr", b"", headers={"X-Only": "header"})
    msg = await asyncio.wait_for(received.get(), 5)
    c.equal("pubsub.headers_empty_payload", (msg.data, msg.headers), (b"", {"X-Only": "header"}))
    await sub.unsubscribe()


# --- stream admin --------------------------------------------------------------


async def stream_admin(nc, c):
    """Stream info and list, get and delete a message by sequence, purge."""
    js, jsm = nc.jetstream(), nc.jsm()
    stream = f"PY_ADMIN_{RUN}"
    await jsm.add_stream(name=stream, subjects=[f"{PREFIX}.admin.>"])
    try:
        await js.publish(f"{PREFIX}.admin.a", b"one")
        await js.publish(f"{PREFIX}.admin.b", b"two", headers={"X-Kind": "second"})
        await js.publish(f"{PREFIX}.admin.c", b"three")

        info = await jsm.stream_info(stream)
        c.equal(
            "admin.stream_info",
            (info.config.name, info.config.subjects, info.state.messages, info.state.first_seq, info.state.last_seq),
            (stream, [f"{PREFIX}.admin.>"], 3, 1, 3),
        )
        names = [s.config.name for s in await jsm.streams_info()]
        c.ok("admin.stream_list", stream in names, f"{stream} not in {names}")

        msg = await jsm.get_msg(stream, 2)
        c.equal(
            "admin.get_msg_by_seq",
            (msg.seq, msg.subject, msg.data, (msg.headers or {}).get("X-Kind")),
            (2, f"{PREFIX}.admin.b", b"two", "second"),
        )
        last = await jsm.get_last_msg(stream, f"{PREFIX}.admin.c")
        c.equal("admin.get_last_msg_for_subject", (last.seq, last.data), (3, b"three"))

        c.equal("admin.delete_msg", await jsm.delete_msg(stream, 2), True)
        await c.raises("admin.get_deleted_msg_fails", nats.js.errors.NotFoundError, jsm.get_msg(stream, 2))
        info = await jsm.stream_info(stream)
        c.equal("admin.after_delete", (info.state.messages, info.state.first_seq, info.state.last_seq), (2, 1, 3))

        c.equal("admin.purge", await jsm.purge_stream(stream), True)
        info = await jsm.stream_info(stream)
        c.equal("admin.after_purge", (info.state.messages, info.state.first_seq), (0, 4))
        ack = await js.publish(f"{PREFIX}.admin.a", b"four")
        c.equal("admin.seq_continues_after_purge", ack.seq, 4)
    finally:
        c.equal("admin.delete_stream", await jsm.delete_stream(stream), True)
    await c.raises("admin.deleted_stream_not_found", nats.js.errors.NotFoundError, jsm.stream_info(stream))


GROUPS = [js_publish, pull_consume, key_value, request_reply, core_pubsub, stream_admin]


async def main(url):
    c = Checks()
    failed = 0
    errors = []

    async def on_error(e):  # nats-py reports connection errors here (and logs them otherwise)
        errors.append(e)

    try:
        nc = await asyncio.wait_for(
            nats.connect(url, connect_timeout=5, allow_reconnect=False, max_reconnect_attempts=1, error_cb=on_error),
            15,
        )
    except Exception as e:  # noqa: BLE001
        print(f"FAIL connect: {type(e).__name__}: {e!r} (errors: {errors!r})", flush=True)
        return 1
    c.ok("connect", nc.is_connected)
    for group in GROUPS:
        c.current = group.__name__
        try:
            await asyncio.wait_for(group(nc, c), GROUP_TIMEOUT)
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {e.name}: {e.detail}", flush=True)
        except asyncio.TimeoutError:
            failed += 1
            print(f"FAIL {c.current}: {group.__name__} hung for {GROUP_TIMEOUT}s", flush=True)
        except Exception as e:  # noqa: BLE001 - any client error fails the check at hand
            failed += 1
            print(f"FAIL {c.current}: {type(e).__name__}: {e!r}", flush=True)
    await nc.close()
    print(f"nats-py {version('nats-py')}: {c.passed} checks passed, {failed} groups failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: interop.py NATS_URL", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1])))
