"""GET /v1/model: the model card and what the runtime made of it."""

from __future__ import annotations

from fastapi import APIRouter, Request

from posecore.contract import ErrorResponse
from posecore.detection import PersonDetector
from posecore.errors import PoseError
from service.api.deps import service_state
from service.schemas import DetectorInfo, ModelCardResponse

router = APIRouter(tags=["model"])


@router.get("/v1/model", response_model=ModelCardResponse, summary="The served model's card",
            responses={401: {"model": ErrorResponse, "description": "Missing or wrong API key (when keys are set)"},
                       503: {"model": ErrorResponse, "description": "The model is not loaded yet"}})
async def model_card(request: Request) -> ModelCardResponse:
    state = service_state(request)
    if state.model is None:
        raise PoseError("not_ready", "the model is not loaded yet")
    card, backend = state.model.card, state.model.backend
    return ModelCardResponse(
        name=card.name,
        arch=card.arch,
        trained=card.trained,
        warning=card.warning,
        precision=card.precision,
        provider=backend.provider,
        provider_ok=state.model.provider_status.ok,
        input=card.input.model_dump(),
        output=card.output.model_dump(),
        keypoints=card.keypoints,
        flip_pairs=[list(p) for p in card.flip_pairs],
        skeleton=[list(e) for e in card.skeleton],
        batch_sizes=list(getattr(backend, "batch_sizes", [])),
        card_found=state.model.card_found,
        detector=detector_info(state.detection.detector) if state.detection is not None else None,
        card=card.model_dump(mode="json"),
    )


def detector_info(detector: PersonDetector) -> DetectorInfo:
    return DetectorInfo(
        name=detector.card.name, layout=detector.layout, input_size=list(detector.input_hw),
        score_threshold=detector.score_threshold, nms_iou=detector.nms_iou, max_boxes=detector.max_boxes,
        provider=detector.provider, card_found=detector.card_found, warning=detector.warning,
        card=detector.card.model_dump(mode="json"),
    )
