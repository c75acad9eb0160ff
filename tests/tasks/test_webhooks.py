"""Webhooks against a real HTTP receiver on 127.0.0.1, verified with the spec's algorithm;
and the hostile callback URLs that must never make the service connect anywhere."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import standardwebhooks

from core.errors import CallbackRefused, ConfigurationError
from core.jobs import Job, JobRow
from core.names import WEBHOOK_TASK, JobStatus, Queue
from core.runtime import Runtime
from core.settings import Settings
from core.webhooks import EXTRA_KEY, address_refusal, allowlist, check_callback_url, deliveries
from tasks.webhooks import (
    MAX_DEFERRALS,
    MAX_RETRIES,
    HostSlots,
    backoff_s,
    run_webhook,
    secret_key,
    signature,
)
from tests.tasks.conftest import submit

SECRET = "whsec_" + base64.b64encode(b"earshot webhook test key 32 byte").decode()


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: int = 300) -> bool:
    """Standard Webhooks verification, written from the spec (not from tasks.webhooks)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    signed = f"{msg_id}.{timestamp}.{body.decode()}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


LOOPBACK_ALLOWED = "127.0.0.1"


@dataclass
class Receiver:
    """An HTTP server answering each POST with the next of ``answers`` (then 200).

    ``connections`` counts every TCP connection accepted, HTTP or not: the independent witness
    that a refused callback made no connection at all.
    """

    answers: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve_receiver()


def serve_receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            answer = state.answers.pop(0) if state.answers else 200
            status, extra = answer if isinstance(answer, tuple) else (answer, {})
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def verify_request(self, request: Any, client_address: Any) -> bool:
            state.connections += 1
            return True

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.port = int(server.server_address[1])
    state.url = f"http://127.0.0.1:{state.port}/hooks/earshot"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def runtime_to(runtime: Runtime) -> Callable[..., Runtime]:
    """The runtime with other settings (the allowlist, the secret) on the same data dir."""

    def configure(**settings: Any) -> Runtime:
        runtime.settings = Settings(data_dir=runtime.settings.data_dir, **settings)
        return runtime

    return configure


@pytest.fixture
def signed_runtime(runtime_to: Callable[..., Runtime]) -> Runtime:
    # The test receiver listens on loopback, which only the allowlist opens.
    return runtime_to(webhook_secret=SECRET, webhook_allow=LOOPBACK_ALLOWED)


def ended_job(runtime: Runtime, wav_bytes: bytes, url: str, *, succeed: bool = True) -> Job:
    """A finished job with ``url`` stored as it is (the upload's checks are bypassed)."""
    job = submit(runtime, wav_bytes)
    with runtime.jobs.session() as s:
        row = s.get(JobRow, job.id)
        assert row is not None
        row.callback_url = url
    assert runtime.jobs.mark_running(job.id)
    if succeed:
        assert runtime.jobs.mark_succeeded(
            job.id, result_prefix=f"results/{job.id}/", analyzer_version="test"
        )
    else:
        assert runtime.jobs.mark_failed(job.id, code="unreadable_audio", message="not audio")
    return runtime.jobs.get(job.id)


def apply_task(runtime: Runtime, job_id: str) -> Any:
    # Eager apply runs Celery's retries in place, one after another (countdown is not waited).
    return runtime.celery.tasks[WEBHOOK_TASK].apply(args=[job_id]).get()


def recorded_outcomes(runtime: Runtime, job_id: str) -> list[tuple[int, str, str | None]]:
    # Read from the stored row itself, not through deliveries().
    stored = runtime.jobs.get(job_id).extra.get(EXTRA_KEY, [])
    return [(d["attempt"], d["outcome"], d["status_class"]) for d in stored]


def test_the_spec_test_vector_signs_as_published() -> None:
    # From the Standard Webhooks specification's reference test suite.
    key = secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    got = signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("bad", ["", "whsec_", "whsec_not base64!", "plain words"])
def test_a_malformed_secret_is_a_configuration_error(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="EARSHOT_WEBHOOK_SECRET"):
        secret_key(bad)


def test_success_is_posted_once_signed_and_recorded(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    job = ended_job(signed_runtime, wav_bytes, receiver.url)

    assert apply_task(signed_runtime, job.id) is True

    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    assert verify(SECRET, headers, body)
    assert headers["webhook-id"] == f"msg_{job.id}"
    assert headers["content-type"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{receiver.port}"
    event = json.loads(body)
    assert event["type"] == "analysis.succeeded"
    assert event["data"]["id"] == job.id
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["links"]["result"] == f"/v1/analyses/{job.id}/result"
    assert recorded_outcomes(signed_runtime, job.id) == [(1, "delivered", "2xx")]
    # The other extra fields of the job survive the record.
    assert signed_runtime.jobs.get(job.id).extra.keys() >= {EXTRA_KEY}


def test_the_official_standardwebhooks_package_verifies_the_signature(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    job = ended_job(signed_runtime, wav_bytes, receiver.url)
    apply_task(signed_runtime, job.id)
    headers, body = receiver.received[0]
    assert standardwebhooks.Webhook(SECRET).verify(body, headers)["data"]["id"] == job.id


def test_a_tampered_body_does_not_verify(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    job = ended_job(signed_runtime, wav_bytes, receiver.url)
    apply_task(signed_runtime, job.id)
    headers, body = receiver.received[0]
    assert not verify(SECRET, headers, body.replace(b"succeeded", b"failed"))
    other = "whsec_" + base64.b64encode(b"another key entirely").decode()
    assert not verify(other, headers, body)


def test_a_failing_receiver_gets_retries_and_every_attempt_is_recorded(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    receiver.answers = [500, 503]
    job = ended_job(signed_runtime, wav_bytes, receiver.url, succeed=False)

    assert apply_task(signed_runtime, job.id) is True

    assert len(receiver.received) == 3
    # Same message id and body on every attempt; each attempt signed for its own timestamp.
    assert {h["webhook-id"] for h, _ in receiver.received} == {f"msg_{job.id}"}
    assert len({b for _, b in receiver.received}) == 1
    assert all(verify(SECRET, h, b) for h, b in receiver.received)
    assert json.loads(receiver.received[0][1])["data"]["error"]["code"] == "unreadable_audio"
    assert recorded_outcomes(signed_runtime, job.id) == [
        (1, "failed", "5xx"),
        (2, "failed", "5xx"),
        (3, "delivered", "2xx"),
    ]
    stored = signed_runtime.jobs.get(job.id).extra[EXTRA_KEY]
    # Whole seconds: an attempt's record does not time the receiver.
    assert all(d["at"].endswith("Z") and "." not in d["at"] for d in stored)


def test_an_unreachable_receiver_is_retried_then_given_up_and_the_record_is_coarse(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    # A port nobody listens on: every attempt is a refused connection.
    dead = "http://127.0.0.1:9/hooks"
    job = ended_job(signed_runtime, wav_bytes, dead)

    assert apply_task(signed_runtime, job.id) is False

    assert recorded_outcomes(signed_runtime, job.id) == [
        (n, "failed", None) for n in range(1, MAX_RETRIES + 2)
    ]
    stored = json.dumps(signed_runtime.jobs.get(job.id).extra[EXTRA_KEY]).lower()
    # Nothing a caller could tell a closed port from a filtered one by.
    for word in ("refused", "connect", "errno", "timeout", ":9"):
        assert word not in stored


def test_a_redirect_is_not_followed(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    other = next(serve_receiver())
    receiver.answers = [(302, {"location": other.url})] * (MAX_RETRIES + 1)
    job = ended_job(signed_runtime, wav_bytes, receiver.url)

    assert apply_task(signed_runtime, job.id) is False

    assert other.connections == 0
    assert len(receiver.received) == MAX_RETRIES + 1
    assert {o for _, o, _ in recorded_outcomes(signed_runtime, job.id)} == {"failed"}
    assert {c for _, _, c in recorded_outcomes(signed_runtime, job.id)} == {"3xx"}


def test_without_a_secret_the_body_is_sent_unsigned(
    runtime_to: Callable[..., Runtime], wav_bytes: bytes, receiver: Receiver
) -> None:
    runtime = runtime_to(webhook_allow=LOOPBACK_ALLOWED)
    job = ended_job(runtime, wav_bytes, receiver.url)
    assert apply_task(runtime, job.id) is True
    headers, _ = receiver.received[0]
    assert "webhook-signature" not in headers
    assert headers["webhook-id"] == f"msg_{job.id}"


def test_nothing_is_sent_for_a_job_without_url_or_still_running(
    runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    no_url = submit(runtime, wav_bytes)
    assert runtime.jobs.mark_running(no_url.id)
    runtime.jobs.mark_failed(no_url.id, code="x", message="y")
    assert apply_task(runtime, no_url.id) is False
    assert apply_task(runtime, "0" * 32) is False
    running = submit(runtime, wav_bytes)
    with runtime.jobs.session() as s:
        row = s.get(JobRow, running.id)
        assert row is not None
        row.callback_url = receiver.url
    assert runtime.jobs.mark_running(running.id)
    assert apply_task(runtime, running.id) is False
    assert receiver.received == []
    assert runtime.jobs.get(no_url.id).status is JobStatus.FAILED


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(n) for n in range(4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff_s(30) == 3600.0


def test_webhooks_have_their_own_queue(runtime: Runtime) -> None:
    routes = runtime.celery.conf.task_routes
    assert routes[WEBHOOK_TASK] == {"queue": "earshot.webhook"}
    assert Queue.WEBHOOK.value == "earshot.webhook"
    assert "earshot.webhook" in {q.name for q in runtime.celery.conf.task_queues}


# Spellings of this host's loopback that the OS resolver accepts (ipaddress rejects most).
LOOPBACK_SPELLINGS = [
    "localhost",
    "LOCALHOST",
    "127.0.0.1",
    "127.1",
    "0x7f000001",
    "0x7f.1",
    "2130706433",
    "0177.0.0.1",
    "017700000001",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_refused_and_never_connected(
    runtime: Runtime, wav_bytes: bytes, receiver: Receiver, host: str
) -> None:
    url = f"http://{host}:{receiver.port}/hooks"
    # Refused as loopback, or as a spelling the HTTP client itself rejects (0177.0.0.1).
    with pytest.raises(CallbackRefused, match=r"loopback|not a valid URL"):
        check_callback_url(url, allow=allowlist(None))

    # A URL stored before this check existed, or rebound since: the delivery refuses it too.
    job = ended_job(runtime, wav_bytes, url)
    assert apply_task(runtime, job.id) is False

    assert receiver.connections == 0
    assert recorded_outcomes(runtime, job.id) == [(1, "refused", None)]


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("[::]", "unspecified"),
        ("0.0.0.0", "unspecified"),
        ("0", "unspecified"),
        ("[fe80::1]", "link-local"),
        ("169.254.169.254", "link-local"),
        ("[::ffff:169.254.169.254]", "link-local"),
        ("[::ffff:10.0.0.1]", "private"),
        ("10.0.0.1", "private"),
        ("10.255.255.254", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("[fc00::1]", "private"),
        ("[2002:c0a8:101::1]", "private"),  # 6to4 of 192.168.1.1
        ("[64:ff9b::a00:1]", "private"),  # NAT64 of 10.0.0.1
        ("[64:ff9b::7f00:1]", "loopback"),  # NAT64 of 127.0.0.1
        ("224.0.0.1", "multicast"),
        ("[ff02::1]", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT shared space
    ],
)
def test_non_public_addresses_are_refused(host: str, why: str) -> None:
    # The expectation is written by hand from the IANA registries, per address.
    with pytest.raises(CallbackRefused, match=why):
        check_callback_url(f"http://{host}/hook", allow=allowlist(None))


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/hook",
        "https://93.184.216.34:8443/hooks/earshot?tenant=7",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
        "http://[::ffff:93.184.216.34]/hook",
    ],
)
def test_a_public_address_is_accepted(url: str) -> None:
    # Only the decision: nothing connects to these addresses.
    assert check_callback_url(url, allow=allowlist(None)) == url


def test_the_decision_agrees_with_ipaddress_on_whole_ranges() -> None:
    # Independent truth: every address of these blocks is outside the public internet.
    for block in ("127.0.0.0/30", "10.0.0.0/30", "169.254.0.0/30", "::1/128", "fe80::/126"):
        for address in ipaddress.ip_network(block):
            assert address_refusal(address) is not None, address
    assert address_refusal(ipaddress.ip_address("8.8.8.8")) is None


def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    public, private = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.7")

    def both(host: str, port: int) -> list[Any]:
        return [public, private]

    url = "https://hooks.example.test/x"
    with pytest.raises(CallbackRefused, match="private") as refused:
        check_callback_url(url, allow=allowlist(None), resolve=both)
    # What an internal name resolves to is not told to the caller.
    assert "10.0.0.7" not in str(refused.value)
    assert check_callback_url(url, allow=allowlist(None), resolve=lambda h, p: [public]) == url


def test_a_name_that_does_not_resolve_yet_is_accepted_at_upload() -> None:
    def nxdomain(host: str, port: int) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    url = "https://hooks.example.test/x"
    assert check_callback_url(url, allow=allowlist(None), resolve=nxdomain) == url


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://example.org/a\r\nX-Injected: 1", "'\\\\r'"),
        ("http://example.org/a\nb", "'\\\\n'"),
        ("http://exa mple.org/", "' '"),
        ("http://example.org/\tx", "'\\\\t'"),
        ("http://example.org/\x00", "'\\\\x00'"),
        ("http://example.org/caf\u00e9", "non-ASCII"),
        ("http://user:pw@example.org/", "user name or password"),
        ("http://@example.org/", "user name or password"),
        ("http://example.org:0/", "port 0"),
        ("http://example.org:65536/", "not a valid URL"),
        ("http://example.org:99999999999/", "not a valid URL"),
        ("http:///hook", "no host"),
        ("http://:80/hook", "no host"),
        ("ftp://example.org/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("not-a-url", "http or https"),
        ("http://example.org\\@127.0.0.1/", "backslash"),
        ("http://[::1/", "not a valid URL"),
        ("http://[zz::1]/", "IPv6"),
        ("http://exa_mple..org%2f/", "invalid host"),
        ("http://example.org/" + "a" * 2030, "limit is 2048"),
    ],
)
def test_malformed_urls_are_refused_naming_the_rule(url: str, rule: str) -> None:
    def must_not_resolve(host: str, port: int) -> list[Any]:
        raise AssertionError(f"{url!r} was resolved before its syntax was checked")

    with pytest.raises(CallbackRefused, match="callback_url") as refused:
        check_callback_url(url, allow=allowlist(None), resolve=must_not_resolve)
    assert rule.replace("\\\\", "\\") in str(refused.value)


def test_a_url_of_2048_characters_is_accepted() -> None:
    url = "http://93.184.216.34/" + "a" * (2048 - len("http://93.184.216.34/"))
    assert len(url) == 2048
    assert check_callback_url(url, allow=allowlist(None)) == url


def test_rebinding_between_upload_and_delivery_is_refused(
    runtime: Runtime, wav_bytes: bytes, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first answer (at upload) is public, every later one (at delivery) this host.
    answers = iter([["93.184.216.34"]])

    def rebinding(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address(a) for a in next(answers, ["127.0.0.1"])]

    # DNS is asked at upload (core.webhooks) and at delivery (tasks.webhooks).
    monkeypatch.setattr("core.webhooks.resolve_host", rebinding)
    monkeypatch.setattr("tasks.webhooks.resolve_host", rebinding)
    url = f"http://rebind.example.test:{receiver.port}/hooks"
    assert check_callback_url(url, allow=allowlist(None)) == url

    job = ended_job(runtime, wav_bytes, url)
    assert apply_task(runtime, job.id) is False

    assert receiver.connections == 0
    assert recorded_outcomes(runtime, job.id) == [(1, "refused", None)]


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
    runtime_to: Callable[..., Runtime],
    wav_bytes: bytes,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "pinned.example.test" is in a reserved TLD (RFC 6761) and resolves nowhere: a client that
    # looked the name up again instead of using the checked address could not deliver at all.
    runtime = runtime_to(webhook_allow="pinned.example.test")
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[Any]:
        lookups.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr("core.webhooks.resolve_host", resolver)
    monkeypatch.setattr("tasks.webhooks.resolve_host", resolver)
    job = ended_job(runtime, wav_bytes, f"http://pinned.example.test:{receiver.port}/in")

    assert apply_task(runtime, job.id) is True

    assert lookups == ["pinned.example.test"]
    headers, _ = receiver.received[0]
    assert headers["host"] == f"pinned.example.test:{receiver.port}"


def test_the_allowlist_opens_only_what_it_names(
    runtime_to: Callable[..., Runtime], wav_bytes: bytes, receiver: Receiver
) -> None:
    url = receiver.url
    assert check_callback_url(url, allow=allowlist("127.0.0.0/8")) == url
    assert check_callback_url(url, allow=allowlist(" hooks.internal , 127.0.0.1 ")) == url
    with pytest.raises(CallbackRefused):
        check_callback_url(url, allow=allowlist("10.0.0.0/8, hooks.internal"))
    with pytest.raises(CallbackRefused):
        check_callback_url("http://192.168.1.1/", allow=allowlist("127.0.0.1"))
    runtime = runtime_to(webhook_allow="10.0.0.0/8")
    job = ended_job(runtime, wav_bytes, url)
    assert apply_task(runtime, job.id) is False
    assert receiver.connections == 0


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "http://x", "a b", "1.2.3.4/8/9"])
def test_a_malformed_allowlist_entry_is_a_configuration_error(bad: str, tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="EARSHOT_WEBHOOK_ALLOW"):
        allowlist(bad)
    # Already when the settings are read, so no process starts with it.
    with pytest.raises(ConfigurationError, match="EARSHOT_WEBHOOK_ALLOW"):
        Settings(data_dir=tmp_path, webhook_allow=bad)


def test_a_receiver_that_never_answers_fails_the_attempt_instead_of_hanging(
    runtime_to: Callable[..., Runtime], wav_bytes: bytes
) -> None:
    runtime = runtime_to(webhook_allow=LOOPBACK_ALLOWED)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts (the kernel completes the handshake) and never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        job = ended_job(runtime, wav_bytes, url)
        done: list[Any] = []
        worker = threading.Thread(
            target=lambda: done.append(
                run_webhook(runtime, job.id, attempt=MAX_RETRIES + 1, deferrals=0)
            ),
            daemon=True,
        )
        worker.start()
        worker.join(timeout=60)  # a hang guard, not a speed requirement
        assert done, "the delivery did not give up on a silent receiver"
    assert done[0].retry_in_s is None and not done[0].delivered
    assert recorded_outcomes(runtime, job.id) == [(MAX_RETRIES + 1, "failed", None)]


def test_a_busy_receiver_host_defers_without_spending_an_attempt(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver
) -> None:
    slots = HostSlots()
    job = ended_job(signed_runtime, wav_bytes, receiver.url)
    limit = signed_runtime.settings.webhook_per_host
    with slots.hold("127.0.0.1", limit=limit), slots.hold("127.0.0.1", limit=limit):
        step = run_webhook(signed_runtime, job.id, attempt=3, deferrals=0, slots=slots)
        assert step.retry_in_s is not None and step.retry_in_s > 0
        assert step.attempt == 3
        assert receiver.connections == 0
        assert signed_runtime.jobs.get(job.id).extra.get(EXTRA_KEY, []) == []
        # Another host is not held up by this one.
        other = ended_job(signed_runtime, wav_bytes, receiver.url.replace("127.0.0.1", "localhost"))
        signed_runtime.settings = Settings(
            data_dir=signed_runtime.settings.data_dir, webhook_allow="127.0.0.1,localhost"
        )
        assert run_webhook(signed_runtime, other.id, attempt=1, deferrals=0, slots=slots).delivered
        given_up = run_webhook(
            signed_runtime, job.id, attempt=3, deferrals=MAX_DEFERRALS, slots=slots
        )
        assert given_up.retry_in_s is None
    # Slots are given back: now the first job goes out.
    assert run_webhook(signed_runtime, job.id, attempt=3, deferrals=5, slots=slots).delivered
    assert receiver.connections == 2


def test_old_detailed_records_are_shown_coarse(runtime: Runtime, wav_bytes: bytes) -> None:
    job = ended_job(runtime, wav_bytes, "https://93.184.216.34/hook")
    old = [
        {
            "attempt": 1,
            "at": "2026-11-24T11:20:04.5Z",
            "status_code": None,
            "error": "ConnectError: [Errno 111] Connection refused",
        },
        {"attempt": 2, "at": "2026-11-24T11:20:09Z", "status_code": 503, "error": "x"},
        {"attempt": 3, "at": "2026-11-24T11:20:19Z", "status_code": 204, "error": None},
    ]
    runtime.jobs.set_extra(job.id, {**job.extra, EXTRA_KEY: old})
    shown = deliveries(runtime.jobs.get(job.id))
    assert [(d["outcome"], d["status_class"]) for d in shown] == [
        ("failed", None),
        ("failed", "5xx"),
        ("delivered", "2xx"),
    ]
    assert "refused" not in json.dumps(shown).lower()


@pytest.mark.parametrize("tail", ["\r\nX-Injected: yes", " x", "\x00"])
def test_a_stored_url_with_crlf_is_refused_and_recorded_instead_of_crashing_the_task(
    signed_runtime: Runtime, wav_bytes: bytes, receiver: Receiver, tail: str
) -> None:
    # Before the upload check existed such a URL was stored; its task then crashed in the HTTP
    # client with no attempt recorded.
    job = ended_job(signed_runtime, wav_bytes, receiver.url + tail)
    assert apply_task(signed_runtime, job.id) is False
    assert recorded_outcomes(signed_runtime, job.id) == [(1, "refused", None)]
    assert receiver.connections == 0


def test_a_stored_url_that_does_not_parse_is_refused_and_recorded(
    signed_runtime: Runtime, wav_bytes: bytes
) -> None:
    job = ended_job(signed_runtime, wav_bytes, "http://[::1/hook")
    assert apply_task(signed_runtime, job.id) is False
    assert recorded_outcomes(signed_runtime, job.id) == [(1, "refused", None)]
