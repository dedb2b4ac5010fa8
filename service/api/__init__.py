"""HTTP routers: pose (single, batch, render), model card, health and metrics, the demo page."""

from fastapi import FastAPI


def register_routes(app: FastAPI) -> None:
    from service.api import health, model, oip, page, pose

    for module in (pose, model, health, page, oip):
        app.include_router(module.router)
