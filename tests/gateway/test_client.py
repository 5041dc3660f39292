"""``gateway.client`` against a real server in a subprocess: every call, the
errors it raises, and the tail that resumes across a ``kill -9`` and restart."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.client import ApiError, AsyncClient, Client, ClientError, TailEvent
from tests.gateway.conftest import ServerFactory
from tests.gateway.helpers import ALICE_KEY, BOB_KEY
from tests.support.server import ServerProcess

WAIT = 30.0


@pytest.fixture
def api(server: ServerProcess) -> Iterator[Client]:
    """A client of the shared server."""
    with Client(server.url, timeout=WAIT) as client:
        yield client


class TailReader:
    """Iterates a tail on a thread, so the test can wait for items with a timeout."""

    def __init__(self, items: Iterator[TailEvent]) -> None:
        self.items: queue.Queue[TailEvent | BaseException] = queue.Queue()
        self._source = items
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._source:
                self.items.put(item)
        except BaseException as error:
            self.items.put(error)

    def next(self) -> TailEvent:
        """The next item (bounded wait); a failure of the tail is raised here."""
        item = self.items.get(timeout=WAIT)
        if isinstance(item, BaseException):
            raise item
        return item

    def offsets_through(self, offset: int) -> list[int]:
        """The offsets of the recorded events read until ``offset`` arrives."""
        seen: list[int] = []
        while not seen or seen[-1] < offset:
            item = self.next()
            if item.offset is not None:
                seen.append(item.offset)
        return seen


def kill_hard(server: ServerProcess) -> None:
    """``kill -9`` the server.

    ``ServerProcess.stop`` does not close its log file when the process has
    already exited; closing it here keeps the ResourceWarning out of the run.
    """
    server.kill()
    log = server._log_file
    if log is not None:
        log.close()
        server._log_file = None


def test_sessions_are_created_read_updated_listed_and_deleted(api: Client) -> None:
    session = api.create_session(
        "echo",
        name="client: trip",
        metadata={"topic": "travel"},
        attributes={"a": {"b": 1}},
    )
    assert session["agent_id"] == "echo"
    assert session["status"] == "active"
    assert api.get_session(session["id"])["name"] == "client: trip"

    updated = api.update_session(session["id"], pinned=True, attributes={"a": {"c": 2}})
    assert updated["pinned_at"] is not None
    assert updated["attributes"] == {"a": {"b": 1, "c": 2}}
    assert api.update_session(session["id"], name=None)["name"] is None

    page = api.list_sessions(q="", pinned=True, limit=1000)
    assert session["id"] in [s["id"] for s in page["sessions"]]

    ended = api.delete_session(session["id"])
    assert ended["status"] == "ended"
    assert api.get_session(session["id"])["status"] == "ended"


def test_a_caller_chosen_id_and_a_scope_make_creation_idempotent(api: Client) -> None:
    first = api.create_session("echo", session_id="client-chosen-1")
    assert api.create_session("echo", session_id="client-chosen-1")["id"] == first["id"]
    scoped = api.create_session("echo", scope="per-peer", user_id="client-u1")
    again = api.create_session("echo", scope="per-peer", user_id="client-u1")
    assert again["id"] == scoped["id"]


def test_iter_sessions_walks_every_page(api: Client) -> None:
    agent_user = "client-pager"
    made = {api.create_session("echo", user_id=agent_user)["id"] for _ in range(5)}
    first = api.list_sessions(user_id=agent_user, limit=2)
    assert len(first["sessions"]) == 2
    assert first["next_cursor"]
    assert first["total"] == 5
    walked = [s["id"] for s in api.iter_sessions(user_id=agent_user, page_size=2)]
    assert sorted(walked) == sorted(made)
    assert len(walked) == 5


def test_send_waits_for_the_reply(api: Client) -> None:
    sid = api.create_session("echo")["id"]
    result = api.send(
        sid, "Find me a train to Lyon", metadata={"via": "client"}, timeout=20
    )
    assert result["reply"]["content"] == "Find me a train to Lyon"
    assert result["user_message"]["metadata"] == {"via": "client"}
    assert result["usage"] == {"input_tokens": 6, "output_tokens": 6}
    assert result["session"]["message_count"] == 2


def test_stream_message_yields_the_turn_events_in_order(api: Client) -> None:
    sid = api.create_session("echo")["id"]
    events = list(api.stream_message(sid, "one two three"))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "done"
    assert kinds.index("message_stop") < kinds.index("done")
    text = "".join(e["text"] for e in events if e["type"] == "text_delta")
    assert text == "one two three"
    assert events[-1]["reply"]["content"] == "one two three"


def test_a_streamed_turn_that_is_refused_raises_before_any_event(api: Client) -> None:
    with pytest.raises(ApiError) as caught:
        list(api.stream_message("no-such-session", "hello"))
    assert caught.value.status == 404
    assert caught.value.code == "not_found"


def test_submit_returns_the_message_and_the_reply_arrives_on_the_tail(
    api: Client,
) -> None:
    sid = api.create_session("echo")["id"]
    message = api.submit(sid, "later please")
    assert message["role"] == "user"
    assert message["content"] == "later please"
    tail = TailReader(api.tail(sid, after=message["offset"]))
    item = tail.next()
    while item.offset is None:  # turn deltas come first
        item = tail.next()
    assert item.event == "message_appended"
    assert item.data["data"]["role"] == "assistant"
    assert item.data["data"]["content"] == "later please"


def test_history_pages_and_iter_history_returns_everything_oldest_first(
    api: Client,
) -> None:
    sid = api.create_session("echo")["id"]
    for word in ("a", "b", "c"):
        api.send(sid, word)
    newest = api.history(sid, limit=2)
    assert [m["content"] for m in newest["messages"]] == ["c", "c"]
    assert newest["has_more"]
    older = api.history(
        sid, limit=10, before=newest["messages"][-1]["offset"], order="asc"
    )
    assert [m["content"] for m in older["messages"]] == ["a", "a", "b", "b"]
    assert (
        api.history(sid, after=older["messages"][0]["offset"], limit=1)["has_more"]
        is True
    )
    assert [m["content"] for m in api.iter_history(sid, page_size=2)] == [
        "a",
        "a",
        "b",
        "b",
        "c",
        "c",
    ]


def test_events_state_at_and_branches_describe_the_log(api: Client) -> None:
    sid = api.create_session("echo")["id"]
    api.send(sid, "first")
    page = api.events(sid, after=0, limit=2)
    assert [e["offset"] for e in page["events"]] == [1, 2]
    assert page["has_more"]
    assert [e["type"] for e in api.events(sid, after=2)["events"]] == [
        "message_appended",
        "turn_ended",
    ]
    assert api.state_at(sid, 2)["message_count"] == 1
    assert api.state_at(sid)["message_count"] == 2
    tree = api.branches(sid)
    assert tree["session_id"] == sid
    assert tree["restores"] == []
    assert tree["forks"] == []


def test_checkpoints_are_saved_listed_restored_and_deleted(api: Client) -> None:
    sid = api.create_session("echo")["id"]
    api.send(sid, "first")
    checkpoint = api.save_checkpoint(sid, "after first", description="kept")
    assert checkpoint["name"] == "after first"
    assert checkpoint["message_count"] == 2
    api.send(sid, "second")
    assert [c["id"] for c in api.list_checkpoints(sid)] == [checkpoint["id"]]

    restored = api.restore_checkpoint(sid, checkpoint["id"])
    assert restored["message_count"] == 2
    assert [m["content"] for m in api.iter_history(sid)] == ["first", "first"]
    assert api.delete_checkpoint(sid, checkpoint["id"]) is None
    assert api.list_checkpoints(sid) == []
    with pytest.raises(ApiError) as caught:
        api.restore_checkpoint(sid, checkpoint["id"])
    assert caught.value.code == "checkpoint_not_found"
    assert caught.value.status == 404


def test_rewind_and_fork_branch_the_history(api: Client) -> None:
    sid = api.create_session("echo")["id"]
    api.send(sid, "first")
    at_first = api.get_session(sid)["offset"]
    api.send(sid, "second")
    assert api.rewind(sid, at_first)["message_count"] == 2

    fork = api.fork(sid, new_session_id=f"fork-of-{sid}")
    assert fork["id"] == f"fork-of-{sid}"
    assert fork["parent"] == {
        "session_id": sid,
        "offset": api.get_session(sid)["offset"],
    }
    api.send(fork["id"], "only in the fork")
    assert api.get_session(fork["id"])["message_count"] == 4
    older = api.fork(sid, offset=1)
    assert older["message_count"] == 0
    tree = api.branches(sid)
    assert len(tree["restores"]) == 1
    assert {f["session_id"] for f in tree["forks"]} == {fork["id"], older["id"]}


def test_clear_reset_and_export(api: Client) -> None:
    sid = api.create_session("echo", name="client: exported")["id"]
    api.send(sid, "hi")
    markdown = api.export(sid, format="markdown")
    assert isinstance(markdown, str)
    assert markdown.startswith("# client: exported")
    assert "hi" in markdown
    assert api.export(sid, format="text") == "user: hi\n\nassistant: hi"
    exported = api.export(sid)
    assert exported["session"]["id"] == sid
    assert len(exported["messages"]) == 2

    assert api.clear(sid)["message_count"] == 0
    assert api.history(sid)["messages"] == []
    fresh = api.reset(sid)
    assert fresh["id"] != sid
    assert fresh["status"] == "active"
    assert api.get_session(sid)["status"] == "ended"


def test_heartbeat_renew_and_timeout_changes(api: Client) -> None:
    sid = api.create_session(
        "echo", timeout={"timeout_minutes": 30, "auto_renew": False}
    )["id"]
    before = api.get_session(sid)
    assert api.heartbeat(sid)["last_activity_at"] >= before["last_activity_at"]
    renewed = api.renew(sid)
    assert renewed["renewal_count"] == before["renewal_count"] + 1
    changed = api.update_timeout(sid, timeout_minutes=60, warning_threshold_minutes=10)
    assert changed["timeout"]["timeout_minutes"] == 60
    assert changed["timeout"]["warning_threshold_minutes"] == 10
    assert changed["timeout"]["auto_renew"] is False
    with pytest.raises(ApiError) as caught:
        api.update_timeout(sid, timeout_minutes=10**6)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_request"


def test_health_and_metrics(api: Client) -> None:
    health = api.health()
    assert health["status"] == "ok"
    assert health["store"] == "ok"
    assert health["version"]
    assert "sessiond_" in api.metrics()


def test_errors_carry_status_code_detail_and_context(api: Client) -> None:
    with pytest.raises(ApiError) as missing:
        api.get_session("no-such-session")
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert missing.value.detail
    assert missing.value.title == "Not Found"

    sid = api.create_session("echo")["id"]
    offset = api.get_session(sid)["offset"]
    api.send(sid, "mine", if_match=offset)
    with pytest.raises(ApiError) as conflict:
        api.send(sid, "stale", if_match=offset)
    assert conflict.value.status == 409
    assert conflict.value.code == "conflict"
    # the message, its reply and the turn_ended event
    assert conflict.value.current_offset == offset + 3
    assert conflict.value.context["current_offset"] == offset + 3
    with pytest.raises(ApiError) as stale_rename:
        api.update_session(sid, name="client: late", if_match=offset)
    assert stale_rename.value.current_offset == offset + 3
    assert isinstance(conflict.value, ClientError)


def test_an_idempotency_key_makes_a_retried_write_return_the_first_result(
    api: Client,
) -> None:
    sid = api.create_session("echo")["id"]
    first = api.send(sid, "once", idempotency_key="client-key-1")
    again = api.send(sid, "once", idempotency_key="client-key-1")
    assert again["user_message"]["id"] == first["user_message"]["id"]
    assert api.get_session(sid)["message_count"] == 2
    saved = api.save_checkpoint(sid, "cp", idempotency_key="client-key-2")
    assert (
        api.save_checkpoint(sid, "cp", idempotency_key="client-key-2")["id"]
        == saved["id"]
    )
    assert len(api.list_checkpoints(sid)) == 1


def test_an_unreachable_server_raises_a_client_error(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    url = server.url
    server.stop()
    with Client(url, timeout=5) as client, pytest.raises(ClientError) as caught:
        client.health()
    assert caught.value.status is None
    assert not isinstance(caught.value, ApiError)


def test_api_keys_are_sent_as_bearer_tokens(auth_server: ServerProcess) -> None:
    with (
        Client(auth_server.url, ALICE_KEY) as alice,
        Client(auth_server.url, BOB_KEY) as bob,
    ):
        sid = alice.create_session("echo")["id"]
        assert alice.get_session(sid)["id"] == sid
        with pytest.raises(ApiError) as hidden:
            bob.get_session(sid)
        assert hidden.value.status == 404
    with Client(auth_server.url) as anonymous, pytest.raises(ApiError) as refused:
        anonymous.list_sessions()
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")


def test_the_tail_follows_recorded_events_and_live_turn_deltas(
    api: Client, server: ServerProcess
) -> None:
    sid = api.create_session("echo")["id"]
    tail = TailReader(api.tail(sid))
    assert tail.next().event == "opened"
    with Client(server.url, timeout=WAIT) as writer:
        writer.send(sid, "live words")
    items = [tail.next()]
    while items[-1].offset != 3:  # the reply
        items.append(tail.next())
    deltas = [i.data["text"] for i in items if i.event == "text_delta"]
    assert "".join(deltas) == "live words"
    assert all(i.offset is None for i in items if i.event == "text_delta")
    assert [i.offset for i in items if i.offset is not None] == [2, 3]


def test_the_tail_of_an_ended_session_ends_once_caught_up(api: Client) -> None:
    sid = api.create_session("echo")["id"]
    ended = api.delete_session(sid)
    assert list(api.tail(sid, after=ended["offset"])) == []


def test_the_tail_of_a_missing_session_raises(api: Client) -> None:
    with pytest.raises(ApiError) as caught:
        next(api.tail("no-such-session"))
    assert caught.value.code == "not_found"


@pytest.mark.fault
def test_the_tail_resumes_across_a_kill_and_restart_with_no_gap_or_duplicate(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    with (
        Client(server.url, timeout=WAIT) as writer,
        Client(server.url, timeout=WAIT, tail_retries=40, tail_backoff=0.05) as reader,
    ):
        sid = writer.create_session("echo")["id"]
        tail = TailReader(reader.tail(sid))
        assert tail.offsets_through(1) == [1]
        for word in ("before", "the", "crash"):
            writer.send(sid, word)
        # Killed while the tail may still be delivering those events.
        kill_hard(server)
        server.restart()
        for word in ("after", "restart"):
            writer.send(sid, word)
        final = writer.get_session(sid)["offset"]
        assert final == 16  # 1 + 5 turns of 3 events
        assert [1, *tail.offsets_through(final)] == list(range(1, final + 1))
        # and nothing more: a later event is the next offset, not a repeat
        writer.send(sid, "again")
        assert tail.offsets_through(final + 1)[0] == final + 1


@pytest.mark.fault
def test_the_tail_gives_up_after_its_retries_when_the_server_stays_down(
    server_factory: ServerFactory,
) -> None:
    server = server_factory()
    with Client(server.url, timeout=WAIT, tail_retries=3, tail_backoff=0.01) as client:
        sid = client.create_session("echo")["id"]
        tail = TailReader(client.tail(sid))
        assert tail.offsets_through(1) == [1]
        kill_hard(server)
        with pytest.raises(ClientError, match="broke 4 times in a row at offset 1"):
            tail.next()


def test_the_tail_resends_last_event_id_and_drops_offsets_a_server_repeats() -> None:
    # A server that ignores Last-Event-ID and breaks its first stream mid-way.
    seen_headers: list[str | None] = []

    class Broken(httpx.SyncByteStream):
        def __init__(self, frames: list[bytes], fail: bool) -> None:
            self.frames, self.fail = frames, fail

        def __iter__(self) -> Iterator[bytes]:
            yield from self.frames
            if self.fail:
                raise httpx.ReadError("connection reset")

    def frame(offset: int) -> bytes:
        return b'id: %d\nevent: e\ndata: {"offset": %d}\n\n' % (offset, offset)

    def handler(request: httpx.Request) -> httpx.Response:
        seen_headers.append(request.headers.get("last-event-id"))
        first = len(seen_headers) == 1
        frames = (
            [frame(n) for n in (1, 2, 3)] if first else [frame(n) for n in range(1, 6)]
        )
        frames.insert(
            1, b'event: text_delta\ndata: {"type": "text_delta", "text": "x"}\n\n'
        )
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=Broken(frames, fail=True),
        )

    transport = httpx.MockTransport(handler)
    with Client(
        "http://test", transport=transport, tail_retries=1, tail_backoff=0.001
    ) as client:
        items: list[TailEvent] = []
        tail = client.tail("s")
        for item in tail:
            items.append(item)
            if item.offset == 5:
                break
    assert [i.offset for i in items if i.offset is not None] == [1, 2, 3, 4, 5]
    assert sum(1 for i in items if i.event == "text_delta") == 2
    assert seen_headers == [None, "3"]


def test_the_async_client_offers_the_same_calls(server: ServerProcess) -> None:
    async def scenario() -> dict[str, Any]:
        async with AsyncClient(server.url, timeout=WAIT) as client:
            sid = (await client.create_session("echo", user_id="async-user"))["id"]
            reply = await client.send(sid, "async hello")
            deltas = [
                e
                async for e in client.stream_message(sid, "a b")
                if e["type"] == "text_delta"
            ]
            history = [
                m["content"] async for m in client.iter_history(sid, page_size=1)
            ]
            listed = [
                s["id"]
                async for s in client.iter_sessions(user_id="async-user", page_size=1)
            ]
            checkpoint = await client.save_checkpoint(sid, "async")
            last = (await client.get_session(sid))["offset"]
            offsets = []
            async for item in client.tail(sid):
                if item.offset is not None:
                    offsets.append(item.offset)
                if item.offset == last:
                    break
            try:
                await client.get_session("no-such-session")
            except ApiError as error:
                code = error.code
            return {
                "reply": reply["reply"]["content"],
                "deltas": "".join(d["text"] for d in deltas),
                "history": history,
                "listed": listed == [sid],
                "offsets": offsets,
                "checkpoint": checkpoint["offset"],
                "code": code,
            }

    found = asyncio.run(asyncio.wait_for(scenario(), WAIT))
    assert found == {
        "reply": "async hello",
        "deltas": "a b",
        "history": ["async hello", "async hello", "a b", "a b"],
        "listed": True,
        "offsets": [1, 2, 3, 4, 5, 6, 7, 8],
        "checkpoint": 7,
        "code": "not_found",
    }
