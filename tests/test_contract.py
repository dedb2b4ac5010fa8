"""The /v1 contract (posecore/contract.py) and its two mirrors: the service's request field table, and the
httpx-only client's options and result types. A field added on one side and not the other fails here."""

from __future__ import annotations

import dataclasses
import typing

import httpx
import pose_client
import pose_client.models as client_models
import pytest
from pydantic import BaseModel, ValidationError

from posecore import contract
from service.request import FIELDS

# contract response type -> the client's dataclass that parses it (ErrorBody: the client's errors read it)
MIRRORS: dict[type[BaseModel], type] = {
    contract.PoseResponse: client_models.PoseResult,
    contract.Person: client_models.Person,
    contract.Keypoint: client_models.Keypoint,
    contract.ModelInfo: client_models.ModelInfo,
    contract.ImageInfo: client_models.ImageSize,
}


def test_the_service_reads_every_option_of_the_contract_and_nothing_else() -> None:
    per_call = {field.name for field in FIELDS if not field.per_item}
    assert per_call == set(contract.PoseOptions.model_fields)
    assert {field.name for field in FIELDS if field.per_item} == {"boxes"}
    for field in FIELDS:  # the documented text is the contract's
        if not field.per_item:
            assert field.description == contract.PoseOptions.model_fields[field.name].description


def test_the_client_options_mirror_the_contract_with_the_same_defaults() -> None:
    mirrored = {f.name: f.default for f in dataclasses.fields(pose_client.PoseOptions)}
    assert mirrored == {name: info.default for name, info in contract.PoseOptions.model_fields.items()}
    assert pose_client.options.BOX_FORMATS == contract.BOX_FORMATS == typing.get_args(contract.BoxFormat)


@pytest.mark.parametrize("answer", list(MIRRORS))
def test_the_client_results_carry_every_field_of_the_answer(answer: type[BaseModel]) -> None:
    client_fields = {f.name for f in dataclasses.fields(MIRRORS[answer])} - {"request_id"}
    assert client_fields == set(answer.model_fields), MIRRORS[answer]


def test_an_answer_the_service_builds_is_what_the_client_parses() -> None:
    answer = contract.PoseResponse(
        image=contract.ImageInfo(width=640, height=480),
        model=contract.ModelInfo(name="m", arch="w32_256x192", trained=True, provider="CPUExecutionProvider"),
        flip=True,
        persons=[contract.Person(box=[1.0, 2.0, 30.0, 40.0], box_score=0.9, score=0.5,
                                 keypoints=[contract.Keypoint(name="nose", x=5.5, y=6.25, score=0.75)],
                                 coco_keypoints=[5.5, 6.25, 0.75])],
        timings_ms={"decode": 1.5},
    )
    parsed = client_models.PoseResult.from_json(answer.model_dump(mode="json"))
    assert parsed.image == client_models.ImageSize(640, 480)
    assert parsed.persons[0].box == (1.0, 2.0, 30.0, 40.0)
    assert parsed.persons[0].keypoints[0] == client_models.Keypoint("nose", 5.5, 6.25, 0.75)
    assert parsed.model.provider == "CPUExecutionProvider" and parsed.timings_ms == {"decode": 1.5}


def test_an_answer_with_a_nan_is_refused_when_built_not_sent_as_null() -> None:
    with pytest.raises(ValidationError):
        contract.Keypoint(name="nose", x=float("nan"), y=0.0, score=0.5)
    with pytest.raises(ValidationError):
        contract.Person(box=[1.0, 2.0, 3.0], box_score=1.0, score=1.0, keypoints=[], coco_keypoints=[])


def test_client_options_are_sent_by_their_contract_names() -> None:
    options = pose_client.PoseOptions(box_format="xyxy", flip=False, detect=True)
    assert options.form_fields() == {"box_format": "xyxy", "flip": "false", "detect": "true"}
    assert pose_client.PoseOptions().form_fields() == {"box_format": "xywh"}  # None: the service decides
    with pytest.raises(ValueError, match="box_format"):
        pose_client.PoseOptions(box_format="cxcywh")


def test_a_stage_is_its_name_on_the_wire() -> None:
    """Stages key timings_ms, the Server-Timing header and the stage label: each must read as its bare name."""
    assert [str(stage) for stage in contract.Stage] == ["decode", "video", "detect", "preprocess", "queue",
                                                        "inference", "postprocess"]
    assert f"{contract.Stage.QUEUE};dur=1" == "queue;dur=1"
    answer = contract.PoseResponse.model_validate({
        "image": {"width": 1, "height": 1}, "flip": False, "persons": [],
        "model": {"name": "m", "arch": "a", "trained": False, "provider": "cpu"},
        "timings_ms": {contract.Stage.DECODE: 1.0}})
    assert '"timings_ms":{"decode":1.0}' in answer.model_dump_json()


def test_a_client_sends_its_own_options_unless_a_call_brings_some() -> None:
    sent: list[bytes] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request.read())
        return httpx.Response(500, json={"error": {"code": "internal_error", "message": "-"}})  # the request counts

    options = pose_client.PoseOptions(flip=False)
    with pose_client.PoseClient("http://fake", options=options, max_retries=0,
                                transport=httpx.MockTransport(record)) as client:
        for call_options in (None, client.options.replace(flip=True)):  # a call's options replace them whole
            with pytest.raises(pose_client.ServerError):
                client.pose(b"jpeg", options=call_options)
    own, replaced = sent
    assert b'name="flip"\r\n\r\nfalse\r\n' in own and b'name="flip"\r\n\r\ntrue\r\n' in replaced
