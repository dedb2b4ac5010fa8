"""The /v1 answers, built once from the contract types (posecore/contract.py) out of the serving layer's results.

The routers only serialise what these return (`answer_bytes`); OpenAPI documents the same types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from posecore.codec import PersonPose
from posecore.contract import BatchItemResult, BatchResponse, ModelInfo, PoseResponse, Stage
from posecore.errors import PoseError
from service.serving import PoseResult
from service.state import LoadedModel


def model_info(model: LoadedModel) -> ModelInfo:
    card = model.card
    return ModelInfo(name=card.name, arch=card.arch, trained=card.trained, provider=model.backend.provider,
                     warning=card.warning)


def timings_ms(timings_s: Mapping[Stage, float]) -> dict[str, float]:
    return {stage.value: round(seconds * 1000, 3) for stage, seconds in timings_s.items()}


def pose_response(result: PoseResult, model: ModelInfo, keypoint_names: Sequence[str]) -> PoseResponse:
    """One image's answer. Validated in one pass from plain values (the per-keypoint objects are pydantic's, not
    built one by one here): a NaN or a wrong box length is refused here, as our fault."""
    persons = [person_fields(person, keypoint_names) for person in result.persons]
    width, height = result.image_wh
    return PoseResponse.model_validate({
        "image": {"width": width, "height": height},
        "model": model,
        "flip": result.flip,
        "persons": persons,
        "timings_ms": timings_ms(result.timings_s),
    })


def person_fields(person: PersonPose, keypoint_names: Sequence[str]) -> dict:
    """One person's fields of the contract's Person, as plain values (the video answers add a track ID)."""
    kps = person.keypoints.tolist()
    return {
        "box": person.box.tolist(),
        "box_score": float(person.box_score),
        "score": float(person.score),
        "keypoints": [{"name": n, "x": k[0], "y": k[1], "score": k[2]}
                      for n, k in zip(keypoint_names, kps, strict=True)],
        "coco_keypoints": [v for k in kps for v in k],
    }


def batch_item(index: int, outcome: PoseResult | PoseError, model: ModelInfo,
               keypoint_names: Sequence[str]) -> BatchItemResult:
    if isinstance(outcome, PoseError):
        return BatchItemResult.model_validate({"index": index, "ok": False, "error": outcome.to_dict()})
    return BatchItemResult(index=index, ok=True, result=pose_response(outcome, model, keypoint_names))


def batch_response(outcomes: Sequence[PoseResult | PoseError], model: ModelInfo,
                   keypoint_names: Sequence[str]) -> BatchResponse:
    return BatchResponse(model=model, results=[batch_item(i, outcome, model, keypoint_names)
                                               for i, outcome in enumerate(outcomes)])


def answer_bytes(answer: PoseResponse | BatchResponse) -> bytes:
    """The JSON body: every field, nulls included, as documented."""
    return answer.model_dump_json().encode()
