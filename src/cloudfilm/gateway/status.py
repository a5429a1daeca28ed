"""What the hospital's IT sees of its gateway: a status page, ``/status.json``, ``/metrics``.

Served on the gateway's own port (default loopback only: the page names studies and their
problems, and the gateway has no users of its own; open it wider with ``status_host``).
``cloudfilm gateway status`` reads the same numbers from the spool, so it works when the
gateway is stopped, too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cloudfilm.gateway.metrics import GatewayMetrics
from cloudfilm.http.templating import BEIJING, add_texts, env, lang_of

TEXTS = {
    "gw.title": ("云胶片网关", "cloudfilm gateway"),
    "gw.switch": ("English", "中文"),
    "gw.state.idle": ("空闲：没有待上传的内容", "idle: nothing waiting"),
    "gw.state.uploading": ("正在上传", "uploading"),
    "gw.state.retrying": ("云端暂不可达，稍后重试", "cloud unreachable, retrying"),
    "gw.state.paused": ("按带宽计划暂停上传", "paused by the bandwidth schedule"),
    "gw.state.token_refused": ("云端拒绝了网关令牌，上传已停止", "the cloud refused the token"),
    "gw.waiting": ("等待上传（影像 / 报告）", "waiting (instances / reports)"),
    "gw.waiting_bytes": ("待上传数据量", "bytes waiting"),
    "gw.limit": ("上限", "limit"),
    "gw.oldest": ("最早等待", "oldest waiting"),
    "gw.rate": ("上传速率", "upload rate"),
    "gw.bandwidth": ("当前带宽限制", "bandwidth now"),
    "gw.last_success": ("最近一次上传成功", "last success"),
    "gw.sent": ("已上传（影像 / 报告）", "sent (instances / reports)"),
    "gw.wire": ("线路上", "on the wire"),
    "gw.set_aside": (
        "已搁置（云端拒收，不再重试）",
        "set aside (refused by the cloud, not retried)",
    ),
    "gw.what": ("内容", "item"),
    "gw.why": ("原因", "why"),
    "gw.when": ("时间", "when"),
    "gw.none": ("无", "none"),
    "gw.retry_hint": (
        "问题解决后：cloudfilm gateway retry [编号…]",
        "once the cause is fixed: cloudfilm gateway retry [ID…]",
    ),
}
add_texts(TEXTS)


def _filesize(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _unixtime(ts: float) -> str:
    return datetime.fromtimestamp(ts, BEIJING).strftime("%Y-%m-%d %H:%M:%S")


env.filters.setdefault("filesize", _filesize)
env.filters.setdefault("unixtime", _unixtime)


def status_app(
    snapshot: Callable[[], dict[str, Any]], metrics: GatewayMetrics, ae_title: str, cloud: str
) -> Starlette:
    def page(request: Request) -> Response:
        s = snapshot()
        lang = lang_of(request)
        state = s["uploading_state"]
        html = env.get_template("gateway/status.html").render(
            lang=lang,
            html_lang="en" if lang == "en" else "zh-CN",
            switch_href="?lang=" + ("zh" if lang == "en" else "en"),
            s=s,
            ae_title=ae_title,
            cloud_url=cloud,
            state_class={"token_refused": "bad", "retrying": "warn", "paused": "warn"}.get(
                state, ""
            ),
        )
        return Response(
            html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"}
        )

    def status_json(request: Request) -> Response:
        return JSONResponse(snapshot(), headers={"Cache-Control": "no-store"})

    def metrics_page(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/status.json", status_json),
            Route("/metrics", metrics_page),
            Route("/healthz", healthz),
        ]
    )


class StatusServer:
    """uvicorn in a thread: the gateway's other parts run in threads of the same process."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway-status", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise RuntimeError("the status page could not start (port in use?)")
            time.sleep(0.05)

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
