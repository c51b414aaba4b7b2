"""grokrun.cluster's words for what Ray reports, and the summary's record of where a run trained, in a table."""

import pytest

from grokrun import cluster
from grokrun.report import ran_on


def test_a_ray_or_python_version_mismatch_is_named_with_the_fix():
    from ray._private.utils import check_version_info  # Ray's own check, on a cluster's metadata of another Ray

    with pytest.raises(RuntimeError) as raised:
        check_version_info({"ray_version": "2.9.0", "python_version": "3.10.4"}, "HOST:1234")
    message = cluster._init_failed("head:6379", str(raised.value))
    import platform

    import ray

    assert message == (f"the Ray cluster at head:6379 runs Ray 2.9.0 on Python 3.10.4, this machine Ray "
                       f"{ray.__version__} on Python {platform.python_version()}: run the sweep from a Python 3.10.4 "
                       "with `pip install 'ray==2.9.0'`")


def test_other_failures_to_join_keep_rays_reason_in_one_line():
    assert cluster._init_failed("head:6379", "Could not\nconnect") == (
        "cannot join the Ray cluster at head:6379: Could not connect (is its head running? "
        "`ray status --address head:6379`)")


def test_a_token_is_found_where_ray_looks(tmp_path, monkeypatch):
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not cluster._has_token()
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x")
    assert cluster._has_token()
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))
    assert not cluster._has_token()
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    assert cluster._has_token()


def test_ran_on_reads_as_host_and_node_with_each_resume_from_its_step():
    assert ran_on({"ran_on": [{"host": "a", "node": "local", "from_step": 0}]}) == "a:local"
    assert ran_on({"ran_on": [{"host": "a", "node": "0123456789abcdef", "from_step": 0},
                              {"host": "b", "node": "fedcba9876543210", "from_step": 150}]}) == (
        "a:01234567, b:fedcba98 from 150")
    assert ran_on({}) is None and ran_on(None) is None  # runs from before the record
