"""Pre-NMS candidates of the detectors with NMS (tests/architectures.py): only while recording,
outputs unchanged."""

import pytest
import torch

from corrloss_d2.modeling import candidates as candidate_recording
from tests.architectures import ARCHITECTURES, names
from tests.tiny import synthetic_batch, tiny_model


@pytest.mark.parametrize("arch", names(where=lambda spec: spec.nms))
def test_candidates_only_while_recording_and_outputs_unchanged(arch):
    # An untrained model scores everything low (near its prior): threshold 0 keeps candidates.
    node = ARCHITECTURES[arch].node
    model = tiny_model(
        arch, f"{node}.SCORE_THRESH_TEST", 0.0, f"{node}.TOPK_CANDIDATES_TEST", 50
    ).eval()
    batch = [{"image": b["image"], "height": 150, "width": 170} for b in synthetic_batch(2)]
    with torch.no_grad():
        normal = model(batch)
        owner = object()
        candidate_recording.start_recording(owner)
        try:
            recorded = model(batch)
        finally:
            candidate_recording.stop_recording(owner)
        after = model(batch)
    for plain, with_candidates, later in zip(normal, recorded, after):
        assert set(plain) == set(later) == {"instances"}
        assert set(with_candidates) == {"instances", "candidates"}
        for field in ("scores", "pred_classes"):
            assert torch.equal(
                plain["instances"].get(field), with_candidates["instances"].get(field)
            )
        assert torch.equal(
            plain["instances"].pred_boxes.tensor, with_candidates["instances"].pred_boxes.tensor
        )
        candidates = with_candidates["candidates"]
        assert candidates.image_size == plain["instances"].image_size == (150, 170)
        assert len(candidates) >= len(plain["instances"]) > 0
        # Every kept detection is one of the candidates (NMS only removes).
        kept = plain["instances"].pred_boxes.tensor
        distance = (
            torch.cdist(
                kept,
                candidates.pred_boxes.tensor,  # exact, not via matmul
                compute_mode="donot_use_mm_for_euclid_dist",
            )
            .min(dim=1)
            .values
        )
        assert distance.max() < 1e-3
