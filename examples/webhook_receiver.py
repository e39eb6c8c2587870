"""The worker side of a webhook hand-off: an HTTP endpoint that checks the Standard
Webhooks signature, drops duplicates by ``webhook-id``, and does the work.

Run it: TICKWORK_WEBHOOK_SECRET=whsec_... python examples/webhook_receiver.py
It serves on 127.0.0.1 (a free port), runs a tickwork node that hands it one job, prints
what it received and stops. In production the receiver is your own service and the node
is `tickwork run` with the same TICKWORK_WEBHOOK_SECRET.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import trio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import tickwork
from tickwork.tasks import WebhookTask

SECRET = os.environ.get("TICKWORK_WEBHOOK_SECRET") or "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
seen: set[str] = set()  # webhook-ids already handled (a real receiver keeps them durably)


class Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            job = Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError:
            self._answer(401)  # final: tickwork does not retry a 4xx
            return
        msg_id = headers["webhook-id"]  # "<instance id>-<attempt>"
        if msg_id not in seen:
            seen.add(msg_id)
            print(f"received {msg_id}: {json.dumps(job)}")
        self._answer(200)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


async def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        store = tickwork.MemoryStore()
        async with (
            tickwork.open_scheduler(store, tasks=[WebhookTask(SECRET)]) as scheduler,
        ):
            with scheduler.subscribe() as events:
                iid = await scheduler.schedule(
                    "webhook",
                    at=datetime.now(UTC),
                    params={"url": url, "json": {"report": "daily", "day": "2030-01-01"}},
                    max_attempts=5,  # a 5xx, a timeout or a refused connection is retried
                )
                with trio.fail_after(30):
                    async for event in events:
                        if isinstance(event, tickwork.TransitionEvent) and event.to_state in (
                            tickwork.State.SUCCEEDED,
                            tickwork.State.FAILED,
                        ):
                            break
            print(f"instance {iid}: {(await scheduler.get(iid)).state.name}")
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    trio.run(main)
