"""/diagnostics levels (emotion_perception.ros.health): ROS-free, hand-built outcomes."""

from __future__ import annotations

from emotion_perception.ros.health import ERROR, OK, WARN, OutcomeSummary, RecentOutcomes, assess

NONE = OutcomeSummary(0, 0, None)


def test_an_active_node_whose_every_recent_frame_failed_is_an_error_with_the_reason():
    outcomes = RecentOutcomes(window=5)
    for _ in range(7):
        outcomes.record_failure("ModuleNotFoundError: No module named 'cv_bridge.boost'")
    summary = outcomes.summary()
    assert (summary.frames, summary.failures) == (5, 5)
    health = assess("active", None, summary, received=10, dropped=0)
    assert health.level == ERROR
    assert "every one of the last 5 frames failed" in health.message and "cv_bridge.boost" in health.message


def test_some_failures_warn_and_recover_once_frames_succeed_again():
    outcomes = RecentOutcomes(window=4)
    outcomes.record_failure("ValueError: bad")
    outcomes.record_processed()
    assert assess("active", None, outcomes.summary(), received=2, dropped=0).level == WARN
    for _ in range(4):
        outcomes.record_processed()
    assert assess("active", None, outcomes.summary(), received=4, dropped=0) .level == OK


def test_two_failures_alone_are_not_yet_all_failed():
    # one or two bad frames at start-up are a warning, not a dead node
    health = assess("active", None, OutcomeSummary(2, 2, "RuntimeError: x"), received=2, dropped=0)
    assert health.level == WARN


def test_input_and_drop_rates():
    assert assess("active", None, NONE, received=0, dropped=0).message == "no input images"
    assert assess("active", None, NONE, received=10, dropped=6).level == WARN
    assert assess("active", None, NONE, received=10, dropped=5) == assess("active", None, NONE, received=1, dropped=0)
    assert assess("active", None, NONE, received=10, dropped=5).level == OK


def test_lifecycle_states():
    # paused on purpose: OK and says so; a configure that failed: ERROR with its reason
    paused = assess("inactive", None, NONE, received=0, dropped=0)
    assert paused.level == OK and "inactive" in paused.message
    failed = assess("unconfigured", "model_path '/x.pt' does not exist", NONE, received=0, dropped=0)
    assert failed.level == ERROR and "/x.pt" in failed.message
    # a clear() on reactivation forgets failures from before
    outcomes = RecentOutcomes()
    outcomes.record_failure("x")
    outcomes.clear()
    assert outcomes.summary() == NONE
