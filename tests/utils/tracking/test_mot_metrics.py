"""MOTChallenge files (exact format, errors with file and line, sequence discovery) and MOT metrics on hand-made
ground truth, checked against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from utils.tracking.metrics import box_iou_xywh, evaluate_mot, score_sequence, summarize
from utils.tracking.mot import (
    find_sequences,
    format_mot_lines,
    read_mot_file,
    read_seqinfo,
    seqinfo_text,
    write_mot_file,
)


def test_mot_lines_are_exactly_the_challenge_format():
    tracks = np.array([[10, 20, 50, 80, 3, 0.87654, 2, 0], [0.5, 1.25, 2, 3, 12, 1.0, 0, 1]], dtype=np.float32)
    assert format_mot_lines(7, tracks) == ["7,3,10.00,20.00,40.00,60.00,0.8765,-1,-1,-1",
                                           "7,12,0.50,1.25,1.50,1.75,1.0000,-1,-1,-1"]
    assert format_mot_lines(1, np.zeros((0, 8))) == []


def test_write_then_read_round_trip(tmp_path):
    rows = np.array([[2, 5, 10, 20, 30, 40, 0.5], [1, 4, 0, 0, 10, 10, 0.25], [2, 4, 1, 1, 10, 10, 0.75]])
    file = tmp_path / "seq.txt"
    write_mot_file(file, rows)
    assert file.read_text().splitlines() == ["1,4,0.00,0.00,10.00,10.00,0.2500,-1,-1,-1",
                                             "2,5,10.00,20.00,30.00,40.00,0.5000,-1,-1,-1",
                                             "2,4,1.00,1.00,10.00,10.00,0.7500,-1,-1,-1"]
    back = read_mot_file(file)
    assert back.shape == (3, 10) and back[:, 7:].tolist() == [[-1, -1, -1]] * 3
    np.testing.assert_allclose(back[1, :7], rows[0])


def test_gt_files_with_fewer_columns_get_defaults(tmp_path):
    file = tmp_path / "gt.txt"
    file.write_text("1,1,0,0,10,10\n\n2, 1, 1, 0, 10, 10, 0, 3, 0.5\n")
    rows = read_mot_file(file)
    assert rows.tolist() == [[1, 1, 0, 0, 10, 10, 1, -1, -1, -1], [2, 1, 1, 0, 10, 10, 0, 3, 0.5, -1]]


@pytest.mark.parametrize(("text", "message"), [
    ("1,1,0,0,10,10\n1,2,0,0\n", "gt.txt:2: expected 6 to 10"),
    ("1,1,0,0,10,ten\n", "gt.txt:1: not a number"),
    ("0,1,0,0,10,10\n", "gt.txt:1: frame numbers are whole numbers from 1"),
    ("1,1,0,0,-5,10\n", "gt.txt:1: negative box width"),
])
def test_malformed_mot_files_name_file_and_line(tmp_path, text, message):
    file = tmp_path / "gt.txt"
    file.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_mot_file(file)


def test_sequences_are_found_in_a_folder_or_below_it(tmp_path):
    for name in ("B-02", "A-01"):
        folder = tmp_path / name
        (folder / "img1").mkdir(parents=True)
        (folder / "gt").mkdir()
        (folder / "gt" / "gt.txt").write_text("1,1,0,0,10,10,1,1,1\n")
        (folder / "seqinfo.ini").write_text(seqinfo_text(name, 5, 64, 48, 25))
    found = find_sequences(tmp_path)
    assert [s.name for s in found] == ["A-01", "B-02"] and found[0].frame_rate == 25 and found[0].length == 5
    assert find_sequences(tmp_path / "B-02")[0].frames == tmp_path / "B-02" / "img1"
    assert read_seqinfo(tmp_path / "A-01")["imwidth"] == "64"
    with pytest.raises(FileNotFoundError, match="no MOTChallenge sequence"):
        find_sequences(tmp_path / "A-01" / "gt")
    (tmp_path / "C").mkdir()
    (tmp_path / "C" / "seqinfo.ini").write_text(seqinfo_text("C", 5, 64, 48, 25))
    with pytest.raises(FileNotFoundError, match="needs its frames in img1/"):
        find_sequences(tmp_path / "C")


def test_iou_of_xywh_boxes():
    iou = box_iou_xywh([[0, 0, 10, 10]], [[5, 0, 10, 10], [20, 20, 1, 1], [0, 0, 10, 10]])
    np.testing.assert_allclose(iou, [[50 / 150, 0.0, 1.0]])


# Hand-made ground truth: gt 1 and gt 2 over 4 frames, 10x10 boxes far apart.
GT = np.array([[f, 1, 0, 0, 10, 10, 1, 1, 1] for f in (1, 2, 3, 4)]
              + [[f, 2, 100, 0, 10, 10, 1, 1, 1] for f in (1, 2, 3, 4)], dtype=np.float64)


def test_metrics_equal_hand_computed_values():
    # Tracker: gt 1 followed as id 7 in frames 1-2 then as id 8 in frames 3-4 (one switch); gt 2 followed exactly
    # (id 3) but missed in frame 4 (one FN); one false positive in frame 2; gt 2's box in frame 3 shifted by 5 px
    # (IoU 5*10 / (150) = 1/3, no match at 0.5 -> one FN and one FP in CLEAR terms).
    pred = np.array([[1, 7, 0, 0, 10, 10], [2, 7, 0, 0, 10, 10], [3, 8, 0, 0, 10, 10], [4, 8, 0, 0, 10, 10],
                     [1, 3, 100, 0, 10, 10], [2, 3, 100, 0, 10, 10], [3, 3, 105, 0, 10, 10],
                     [2, 9, 200, 200, 10, 10]], dtype=np.float64)
    m = evaluate_mot(GT, pred)
    # CLEAR at IoU 0.5: GT = 8, TP = 6 (gt1 x4, gt2 in frames 1-2), FN = 2, FP = 2 (frame 2 stray, frame 3 shifted)
    assert (m.TP, m.FN, m.FP, m.IDSW) == (6, 2, 2, 1)
    assert m.MOTA == pytest.approx(1 - (2 + 2 + 1) / 8)
    # Identity: best 1-1 assignment gt1<->7 (2) or 8 (2), gt2<->3 (2): IDTP = 4; IDFN = 8 - 4; IDFP = 8 - 4
    assert m.IDF1 == pytest.approx(2 * 4 / (8 + 8)) and m.IDR == pytest.approx(0.5) and m.IDP == pytest.approx(0.5)
    assert (m.gt_tracks, m.pred_tracks, m.frames) == (2, 4, 4)
    assert m.MT == 1 and m.PT == 1 and m.ML == 0  # gt1 tracked 4/4, gt2 2/4


def test_hota_equals_hand_computed_value_when_every_match_is_exact():
    # All matched boxes have IoU 1, so every alpha gives the same counts: HOTA = sqrt(DetA * AssA).
    pred = np.array([[1, 7, 0, 0, 10, 10], [2, 7, 0, 0, 10, 10], [3, 8, 0, 0, 10, 10], [4, 8, 0, 0, 10, 10],
                     [1, 3, 100, 0, 10, 10], [2, 3, 100, 0, 10, 10], [3, 3, 100, 0, 10, 10],
                     [2, 9, 200, 200, 10, 10]], dtype=np.float64)
    m = evaluate_mot(GT, pred)
    det_a = 7 / (7 + 1 + 1)  # TP 7, FN 1 (gt2 frame 4), FP 1 (stray)
    # association per TP: pairs (1,7): TPA 2, FNA 2, FPA 0 -> 1/2 (x2 TPs); (1,8): 1/2 (x2); (2,3): TPA 3, FNA 1,
    # FPA 0 -> 3/4 (x3)
    ass_a = (4 * 0.5 + 3 * 0.75) / 7
    assert m.DetA == pytest.approx(det_a) and m.AssA == pytest.approx(ass_a)
    assert m.HOTA == pytest.approx(np.sqrt(det_a * ass_a)) and m.LocA == pytest.approx(1.0)


def test_ignored_ground_truth_is_neither_missed_nor_a_false_positive():
    gt = np.vstack([GT, [[2, 5, 300, 300, 20, 20, 0, 1, 0.1]]])  # consider = 0
    pred = np.vstack([GT[:, :6], [[2, 40, 301, 300, 20, 20], [3, 41, 300, 300, 20, 20]]])
    m = evaluate_mot(gt, pred)
    # the frame-2 box on the ignored region is removed; the frame-3 box there is an ordinary false positive
    assert (m.TP, m.FN, m.FP, m.IDSW) == (8, 0, 1, 0) and m.MOTA == pytest.approx(1 - 1 / 8)


def test_sequences_combine_by_summing_counts():
    pred_a = GT[:, :6].copy()
    pred_b = GT[GT[:, 1] == 1, :6]
    both = summarize([score_sequence(GT, pred_a), score_sequence(GT, pred_b)])
    assert (both.TP, both.FN, both.FP) == (12, 4, 0) and both.MOTA == pytest.approx(12 / 16)
    assert both.IDF1 == pytest.approx(2 * 12 / (16 + 12)) and both.frames == 8


def test_empty_results_score_zero():
    m = evaluate_mot(GT, np.zeros((0, 6)))
    assert (m.TP, m.FN, m.FP) == (0, 8, 0) and m.MOTA == 0.0 and m.IDF1 == 0.0 and m.HOTA == 0.0
