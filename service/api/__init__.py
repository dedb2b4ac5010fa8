"""HTTP routers: pose (single, batch, render), model card, health and metrics, the demo page, and the Open
Inference Protocol v2 front door."""

from fastapi import FastAPI

from service.api import health, model, oip, page, pose, video


def register_routes(app: FastAPI) -> None:
    for module in (pose, video, model, health, page, oip):
        app.include_router(module.router)
