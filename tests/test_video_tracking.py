"""The tracker (service/video/tracking.py) on synthetic sequences whose true identities are known: ID switches
are counted the MOT way (a true person's ID changing between frames where they are seen), and an ID that ever
names two true people is a reuse."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from posecore.codec import PoseCodec
from posecore.modelcard import ModelCard
from service.video.options import read_options
from service.video.session import VideoSession
from service.video.tracking import PoseTracker, box_iou, keypoint_oks

# a standing person's 17 COCO joints, as fractions of their box (x, y)
TEMPLATE = np.array([
    (0.5, 0.08), (0.55, 0.06), (0.45, 0.06), (0.6, 0.08), (0.4, 0.08), (0.7, 0.22), (0.3, 0.22), (0.8, 0.4),
    (0.2, 0.4), (0.85, 0.55), (0.15, 0.55), (0.62, 0.55), (0.38, 0.55), (0.64, 0.76), (0.36, 0.76), (0.65, 0.97),
    (0.35, 0.97)])


def pose(box: np.ndarray, rng: np.random.Generator, noise_px: float, score: float) -> np.ndarray:
    x, y, w, h = box
    points = np.column_stack([x + TEMPLATE[:, 0] * w, y + TEMPLATE[:, 1] * h, np.full(17, score)])
    points[:, :2] += rng.normal(0, noise_px, (17, 2))
    return points


def run(tracker: PoseTracker, scenes: list[list[tuple[int, np.ndarray]]], noise_px: float = 2.0,
        score: float = 0.9, seed: int = 0) -> list[dict[int, int]]:
    """scenes[t] = [(true_id, box)]: per frame, true ID -> assigned ID; the order is shuffled every frame."""
    rng = np.random.default_rng(seed)
    assigned = []
    for step, people in enumerate(scenes):
        order = rng.permutation(len(people))
        people = [people[i] for i in order]
        boxes = np.array([b for _, b in people]).reshape(-1, 4)
        poses = np.array([pose(b, rng, noise_px, score) for _, b in people]).reshape(-1, 17, 3)
        ids = tracker.update(step, boxes, poses)
        assigned.append({true: got for (true, _), got in zip(people, ids, strict=True)})
    return assigned


def id_switches(assigned: list[dict[int, int]]) -> int:
    last: dict[int, int] = {}
    switches = 0
    for frame in assigned:
        for true, got in frame.items():
            if true in last and last[true] != got:
                switches += 1
            last[true] = got
    return switches


def reused_ids(assigned: list[dict[int, int]]) -> set[int]:
    owners: dict[int, set[int]] = {}
    for frame in assigned:
        for true, got in frame.items():
            owners.setdefault(got, set()).add(true)
    return {got for got, trues in owners.items() if len(trues) > 1}


def walker(start: tuple[float, float], velocity: tuple[float, float], size=(40.0, 100.0)):
    return lambda t: np.array([start[0] + velocity[0] * t, start[1] + velocity[1] * t, *size])


def test_people_who_stay_keep_their_ids_whatever_the_detection_order():
    people = [walker((10, 20), (3, 0)), walker((150, 30), (-1, 1)), walker((300, 10), (0, 2))]
    scenes = [[(i, p(t)) for i, p in enumerate(people)] for t in range(40)]
    assigned = run(PoseTracker(), scenes)
    assert id_switches(assigned) == 0 and not reused_ids(assigned)
    assert sorted(set(assigned[-1].values())) == [1, 2, 3]


def test_two_people_crossing_keep_their_ids_thanks_to_the_motion_prediction():
    # they pass each other between frames 13 and 14: each is then nearer where the other was
    a, b = walker((0, 50), (12, 0)), walker((318, 50), (-12, 0))
    scenes = [[(0, a(t)), (1, b(t))] for t in range(28)]
    assert box_iou(a(13), b(13)) > 0.7 and a(14)[0] > b(14)[0]
    assigned = run(PoseTracker(), scenes, noise_px=1.0)
    assert id_switches(assigned) == 0 and not reused_ids(assigned)
    # without the velocity the same crossing swaps them at least once: the prediction is what keeps them apart
    still = PoseTracker(motion=False)
    assert id_switches(run(still, scenes, noise_px=1.0)) > 0


@pytest.mark.parametrize("missing", [1, 5, 10])
def test_a_person_missing_up_to_max_missing_frames_keeps_their_id(missing):
    person = walker((20, 20), (2, 0))
    scenes = [[(0, person(t))] if not 10 <= t < 10 + missing else [] for t in range(10 + missing + 10)]
    assigned = run(PoseTracker(max_missing=10), scenes)
    assert {got for frame in assigned for got in frame.values()} == {1}


def test_a_person_missing_longer_comes_back_with_a_new_id_and_old_ids_are_never_reused():
    person = walker((20, 20), (0, 0))
    scenes = [[(0, person(t))] if not 5 <= t < 5 + 11 else [] for t in range(25)]
    tracker = PoseTracker(max_missing=10)
    assigned = run(tracker, scenes)
    assert assigned[4] == {0: 1} and assigned[16] == {0: 2}  # 11 frames gone: a new track
    # a newcomer later gets a fresh ID too, never 1
    ids = tracker.update(25, np.array([[200.0, 20, 40, 100], [20, 20, 40, 100]]),
                         np.array([pose(np.array([200.0, 20, 40, 100]), np.random.default_rng(1), 0, 0.9),
                                   pose(np.array([20.0, 20, 40, 100]), np.random.default_rng(2), 0, 0.9)]))
    assert ids == [3, 2]


def test_low_confidence_keypoints_fall_back_to_box_iou():
    # an untrained model: every joint scored under the visibility threshold; the boxes still carry identity
    people = [walker((10, 20), (2, 0)), walker((200, 20), (-2, 0))]
    scenes = [[(i, p(t)) for i, p in enumerate(people)] for t in range(20)]
    assigned = run(PoseTracker(), scenes, score=0.05, noise_px=30.0)  # keypoints are noise: only boxes help
    assert id_switches(assigned) == 0 and not reused_ids(assigned)


def test_the_similarities_are_coco_oks_and_iou():
    sigmas = np.full(17, 0.5)
    a = pose(np.array([0.0, 0, 40, 100]), np.random.default_rng(0), 0, 0.9)
    assert keypoint_oks(a, a, 4000.0, sigmas) == pytest.approx(1.0)
    shifted = a.copy()
    shifted[:, 0] += 10  # d^2 = 100 for every joint: exp(-100 / (2 * 4000 * 1.0))
    assert keypoint_oks(a, shifted, 4000.0, sigmas) == pytest.approx(np.exp(-100 / 8000))
    low = a.copy()
    low[:, 2] = 0.1
    assert keypoint_oks(a, low, 4000.0, sigmas) is None
    assert box_iou(np.array([0, 0, 10, 10]), np.array([5, 0, 10, 10])) == pytest.approx(50 / 150)


def test_the_tracking_options_reach_the_tracker():
    # the session asks only the pose codec (whether the card allows the decoding) of the service it runs on
    poser = SimpleNamespace(codec=PoseCodec(ModelCard.official_defaults("card", (256, 192), (64, 48))))
    options = read_options([{"track_threshold": "0.5", "track_max_missing": "0"}], default_flip=False)
    tracker = VideoSession(poser=poser, options=options).tracker  # type: ignore[arg-type]
    assert (tracker.match_threshold, tracker.max_missing) == (0.5, 0)
    defaults = VideoSession(poser=poser, options=read_options([], default_flip=False)).tracker  # type: ignore[arg-type]
    assert (defaults.match_threshold, defaults.max_missing) == (0.3, 10)
