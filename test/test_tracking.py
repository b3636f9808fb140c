"""People over time: smoothing (against hand computations), the tracker's ids, the MOT metrics
(against hand-counted cases), label flicker, the synthetic sequences and the CLI chain."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from emotion_perception.runtime.predictor import PersonPrediction
from emotion_perception.runtime.smoothing import ExponentialSmoother, SmoothingSettings
from emotion_perception.runtime.tracking import PersonTracker, TrackingSettings


def person(x: float, y: float, scores=(0.2, 0.8)) -> PersonPrediction:
    return PersonPrediction(box=np.array([x, y, x + 40, y + 80], np.float32), score=0.6,
                            scores=np.asarray(scores, np.float32), vad=np.full(3, np.nan, np.float32))


# ------------------------------------------------------------------ smoothing
def test_smoother_follows_the_first_order_low_pass_by_elapsed_time():
    smoother = ExponentialSmoother(SmoothingSettings(time_constant_s=1.0))
    assert smoother.update(np.array([0.0]), 0.0)[0] == 0.0  # first observation taken as it is
    # after 1 s at input 1: 1 - e^-1 (hand computation)
    assert smoother.update(np.array([1.0]), 1.0)[0] == pytest.approx(1 - math.exp(-1), rel=1e-6)
    # 2 s later at input 0: (1 - e^-1) * e^-2
    assert smoother.update(np.array([0.0]), 3.0)[0] == pytest.approx((1 - math.exp(-1)) * math.exp(-2), rel=1e-6)


def test_a_dropped_frame_does_not_change_the_estimate_of_a_held_input():
    every_frame, with_drops = (ExponentialSmoother(SmoothingSettings(0.4)) for _ in range(2))
    every_frame.update(np.array([0.0, 1.0]), 0.0)
    with_drops.update(np.array([0.0, 1.0]), 0.0)
    for t in (0.1, 0.2, 0.3, 0.4):
        a = every_frame.update(np.array([1.0, 0.0]), t)
    b = with_drops.update(np.array([1.0, 0.0]), 0.4)  # frames at 0.1-0.3 never arrived
    # Each step keeps e^(-dt/tau) of the old value: four steps of 0.1 s equal one of 0.4 s,
    # except that the held input was seen at 0.1 s already (the first step blends it in too).
    assert a == pytest.approx(b, abs=1e-6)
    assert a[0] == pytest.approx(1 - math.exp(-1.0), rel=1e-5)


def test_smoothing_off_and_unknown_entries():
    raw = ExponentialSmoother(SmoothingSettings(0.0))
    raw.update(np.array([0.0]), 0.0)
    assert raw.update(np.array([0.7]), 0.1)[0] == pytest.approx(0.7)
    vad = ExponentialSmoother(SmoothingSettings(1.0))
    vad.update(np.array([np.nan, 0.5]), 0.0)
    out = vad.update(np.array([0.3, 0.5]), 1.0)
    assert out[0] == pytest.approx(0.3) and out[1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="time constant"):
        SmoothingSettings(-1.0)


# ------------------------------------------------------------------ tracker
def run_crossing(tracker: PersonTracker, frames: range, rate: float, skip=()):
    """Two people walking towards each other on two rows: they swap their left-right order."""
    out = {}
    for f in frames:
        if f in skip:
            continue
        out[f] = tracker.update([person(10 + 10 * f, 10), person(300 - 10 * f, 200)], f / rate)
    return out


def test_ids_confirm_after_n_frames_and_stay_with_each_person_when_they_swap_order():
    tracker = PersonTracker(TrackingSettings(confirmation_frames=3, lost_timeout_s=1.0))
    out = run_crossing(tracker, range(30), rate=10.0)
    assert [p.track_id for p in out[0]] == ["", ""] and [p.track_id for p in out[1]] == ["", ""]
    top, bottom = out[2][0].track_id, out[2][1].track_id
    assert top and bottom and top != bottom
    for f in range(2, 30):  # the top walker is left of the other at first, right of it at the end
        assert (out[f][0].track_id, out[f][1].track_id) == (top, bottom)
    assert out[29][0].prediction.box[0] > out[29][1].prediction.box[0]
    assert tracker.active_tracks == 2


def test_short_misses_keep_the_id_and_a_miss_past_the_timeout_ends_the_track():
    tracker = PersonTracker(TrackingSettings(confirmation_frames=2, lost_timeout_s=0.5))
    out = run_crossing(tracker, range(20), rate=10.0, skip={8, 9, 10})  # 0.4 s without frames
    assert out[11][0].track_id == out[7][0].track_id and out[11][1].track_id == out[7][1].track_id
    ids_before = {p.track_id for p in out[19]}
    # Nobody for 0.8 s (> 0.5 s): the tracks end, the same people come back as new tracks.
    for t in (2.0, 2.4, 2.7):
        tracker.update([], t)
    assert tracker.active_tracks == 0
    for step in range(3):
        back = tracker.update([person(200, 10), person(100, 200)], 2.8 + 0.1 * step)
    new_ids = {p.track_id for p in back}
    assert "" not in new_ids and not new_ids & ids_before  # ids are never reused


def test_the_timeout_is_in_stamp_seconds_not_in_frames():
    # The same 0.6 s gap is 6 frames at 10 Hz and 18 at 30 Hz: a 1 s timeout survives both,
    # a 0.3 s timeout neither.
    for rate in (10.0, 30.0):
        for timeout, survives in ((1.0, True), (0.3, False)):
            tracker = PersonTracker(TrackingSettings(confirmation_frames=2, lost_timeout_s=timeout))
            seen = tracker.update([person(50, 50)], 0.0)
            for i in range(1, 4):
                seen = tracker.update([person(50 + i, 50)], i / rate)
            track = seen[0].track_id
            tracker.update([], 3 / rate + 0.3 + 1e-3 if not survives else 3 / rate + 0.3)
            after = [tracker.update([person(55, 50)], 3 / rate + 0.6 + k / rate)[0].track_id for k in range(2)]
            assert (after[-1] == track) == survives, (rate, timeout)


def test_time_going_backwards_starts_new_tracks():
    tracker = PersonTracker(TrackingSettings(confirmation_frames=2))
    tracker.update([person(50, 50)], 100.0)
    first = tracker.update([person(50, 50)], 100.1)[0].track_id
    assert tracker.update([person(50, 50)], 0.0)[0].track_id == ""  # the bag restarted: a new track
    again = tracker.update([person(50, 50)], 0.1)[0].track_id
    assert first and again and first != again
    with pytest.raises(ValueError, match="confirmation frames"):
        TrackingSettings(confirmation_frames=1)


def test_scores_are_smoothed_per_track_and_raw_values_kept():
    tracker = PersonTracker(TrackingSettings(confirmation_frames=2), SmoothingSettings(1.0))
    (unconfirmed,) = tracker.update([person(50, 50, scores=(0.5, 0.5))], -1.0)
    assert unconfirmed.track_id == "" and list(unconfirmed.scores) == [0.5, 0.5]  # raw until confirmed
    tracker.update([person(50, 50, scores=(0.0, 1.0))], 0.0)  # confirmed: smoothing starts here
    (tracked,) = tracker.update([person(51, 50, scores=(1.0, 0.0))], 1.0)
    np.testing.assert_allclose(tracked.raw_scores, [1.0, 0.0])
    np.testing.assert_allclose(tracked.scores, [1 - math.exp(-1), math.exp(-1)], rtol=1e-5)


# ------------------------------------------------------------------ metrics
def mot(rows):
    from emotion_perception.eval.tracking import MotRows

    ids, boxes = {}, {}
    for frame, track, x in rows:
        ids.setdefault(frame, []).append(track)
        boxes.setdefault(frame, []).append([x, 0, x + 10, 10])
    return MotRows({f: np.array(v) for f, v in ids.items()}, {f: np.array(v, float) for f, v in boxes.items()})


def test_trackeval_metrics_on_a_hand_counted_case():
    from emotion_perception.eval.tracking import tracking_metrics

    # Two people (A at x=0, B at x=100) over 4 frames: 8 true boxes.
    gt = mot([(f, 1, 0) for f in range(1, 5)] + [(f, 2, 100) for f in range(1, 5)])
    # Prediction: A is id 7 in frames 1-2 and id 8 in frames 3-4 (one ID switch); B is found in
    # frames 1-3 only (one miss); one false box far away in frame 4.
    pred = mot([(1, 7, 0), (2, 7, 0), (3, 8, 0), (4, 8, 0), (1, 9, 100), (2, 9, 100), (3, 9, 100), (4, 5, 300)])
    m = tracking_metrics(gt, pred)
    assert (m["IDSW"], m["FN"], m["FP"], m["TP"]) == (1, 1, 1, 7)
    assert m["MOTA"] == pytest.approx(1 - (1 + 1 + 1) / 8)
    # IDF1 = 2 IDTP / (GT + pred): best one-to-one ids: A-7 (2), B-9 (3) -> IDTP 5; 2*5 / (8 + 8)
    assert m["IDF1"] == pytest.approx(10 / 16)
    perfect = tracking_metrics(gt, gt)
    assert perfect["HOTA"] == pytest.approx(1.0) and perfect["IDF1"] == 1.0 and m["HOTA"] < 1.0


def test_label_flicker_counts_changes_per_tracked_second():
    from emotion_perception.eval.tracking import label_flicker

    a, b = frozenset({"Happy"}), frozenset()
    result = label_flicker({"1": [(0.0, a), (0.5, b), (1.0, a), (2.0, a)], "2": [(0.0, b), (1.0, b)]})
    assert result["changes"] == 2 and result["tracked_seconds"] == pytest.approx(3.0)
    assert result["flicker_per_s"] == pytest.approx(2 / 3)


def test_mot_reader_names_the_bad_line(tmp_path):
    from emotion_perception.eval.tracking import read_mot_file

    path = tmp_path / "pred.txt"
    path.write_text("1,1,0,0,10,10,1\nnot,a,line\n")
    with pytest.raises(ValueError, match="pred.txt:2"):
        read_mot_file(path)


# ------------------------------------------------------------------ sequences
def test_sequence_people_cross_occlude_and_change_emotions_slowly(tmp_path):
    from emotion_perception.data.synth.sequence import SequenceSettings, generate_sequence, write_sequence
    from emotion_perception.eval.tracking import read_mot_file, read_track_labels

    settings = SequenceSettings(frames=40, people=3, seed=3)
    frames = list(generate_sequence(settings))
    centres = np.array([[(o.box[0] + o.box[2]) / 2 for o in f.objects] for f in frames])
    order = np.argsort(centres, axis=1)
    assert any((order[0] != order[i]).any() for i in range(len(frames)))  # the left-right order changes
    assert min(o.visibility for f in frames for o in f.objects) < 0.9  # someone is partly hidden
    write_sequence(tmp_path / "seq", settings)
    gt = read_mot_file(tmp_path / "seq" / "gt" / "gt.txt")
    np.testing.assert_allclose(gt.boxes[40], [o.box for o in frames[-1].objects], atol=0.01)
    labels = read_track_labels(tmp_path / "seq" / "gt" / "emotions.csv", "labels", settings.rate_hz)
    changes = sum(a[1] != b[1] for track in labels.values() for a, b in itertools.pairwise(track))
    assert 0 < changes <= settings.people * settings.cue_changes
    again = next(generate_sequence(settings))
    np.testing.assert_array_equal(again.image, frames[0].image)


def test_track_and_eval_commands_on_a_short_sequence(tmp_path, capsys):
    from emotion_perception.cli import main

    seq, pred = tmp_path / "seq", tmp_path / "pred.txt"
    assert main(["synth", "sequence", "--out", str(seq), "--frames", "12", "--people", "2", "--seed", "1",
                 "--size", "320", "240"]) == 0
    assert main(["track", "--model", "models/benet_lite_demo.pt", "--sequence", str(seq), "--out", str(pred),
                 "--backend", "torch", "--device", "cpu"]) == 0
    assert (tmp_path / "pred.emotions.csv").read_text().startswith("frame,id,raw_labels,labels")
    capsys.readouterr()
    assert main(["eval", "tracking", "--gt", str(seq), "--pred", str(pred), "--json", str(tmp_path / "m.json")]) == 0
    report = capsys.readouterr().out
    assert "IDF1" in report and "label flicker (smoothed scores)" in report
    assert main(["eval", "tracking", "--gt", str(tmp_path), "--pred", str(pred)]) == 2


def test_bag_make_writes_a_sequence_at_its_frame_rate(tmp_path):
    import yaml

    from emotion_perception.cli import main

    seq = tmp_path / "seq"
    assert main(["synth", "sequence", "--out", str(seq), "--frames", "5", "--people", "2", "--size", "160", "120",
                 "--rate", "5"]) == 0
    assert main(["bench", "make-bag", "--sequence", str(seq), "--out", str(tmp_path / "bag")]) == 0
    info = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["message_count"] == 5
    assert info["duration"]["nanoseconds"] == pytest.approx(4 * 0.2e9, rel=1e-6)  # 5 Hz: 4 gaps of 0.2 s
