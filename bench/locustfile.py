"""Locust load for rawsse: publishers hitting POST /publish, and subscribers holding
/events streams and counting events. Run headless for a bounded time:

    .venv/bin/locust -f bench/locustfile.py --headless -u 200 -r 50 -t 30s \
        --host http://127.0.0.1:8080

Subscribers are 9 in 10 users; each reads its stream for the user's whole life and
reports every event to Locust's statistics as an "SSE event" with its end-to-end latency.
"""

from __future__ import annotations

import random
import time

from locust import FastHttpUser, HttpUser, between, events, task

TOPICS = [f"locust-{n}" for n in range(10)]


class Publisher(FastHttpUser):
    weight = 1
    wait_time = between(0.05, 0.2)

    @task
    def publish(self) -> None:
        topic = random.choice(TOPICS)
        self.client.post(
            "/publish",
            data={"topic": topic, "data": f"{time.time_ns()}"},
            name="/publish",
        )


class Subscriber(HttpUser):
    weight = 9
    wait_time = between(1, 2)

    @task
    def listen(self) -> None:
        topic = random.choice(TOPICS)
        started = time.monotonic()
        with self.client.get(
            f"/events?topic={topic}", stream=True, name="/events", timeout=60, catch_response=True
        ) as response:
            response.success()
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("data: "):
                    sent_ns = int(line[6:])
                    events.request.fire(
                        request_type="SSE",
                        name="event",
                        response_time=(time.time_ns() - sent_ns) / 1e6,
                        response_length=len(line),
                        exception=None,
                        context={},
                    )
                if time.monotonic() - started > 20:
                    break
