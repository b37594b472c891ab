"""`state.redis_url` forms (sipguard.redis_target) and their check at load: one server, a
Sentinel service, a Cluster; every refusal names what is wrong without quoting the URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipguard.errors import ConfigError
from sipguard.redis_target import RedisTarget, check, parse

PASSWORD = "hunter2-secret"


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("redis://127.0.0.1:6379/0", RedisTarget("single", "redis://127.0.0.1:6379/0")),
        ("unix:///run/redis.sock", RedisTarget("single", "unix:///run/redis.sock")),
        (
            f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379,[::1]:26380/mymaster/2",
            RedisTarget(
                "sentinel",
                f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379,[::1]:26380/mymaster/2",
                (("10.0.0.1", 26379), ("::1", 26380)),
                "mymaster",
                2,
                None,
                PASSWORD,
            ),
        ),
        (
            "rediss+cluster://app:pw@n1:7000,n2:7001",
            RedisTarget(
                "cluster",
                "rediss+cluster://app:pw@n1:7000,n2:7001",
                (("n1", 7000), ("n2", 7001)),
                "",
                0,
                "app",
                "pw",
                True,
            ),
        ),
    ],
)
def test_forms(url: str, target: RedisTarget) -> None:
    assert parse(url) == target
    assert check(url) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"http://:{PASSWORD}@127.0.0.1/0", "unknown scheme 'http'"),
        (f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379", "no service"),
        (f"redis+sentinel://:{PASSWORD}@10.0.0.1/mymaster", "every node must be HOST:PORT"),
        ("redis+sentinel://10.0.0.1:26379/mymaster/x", "must be a number"),
        (f"redis+cluster://:{PASSWORD}@n1:7000/3", "database 0 only"),
        ("redis+cluster://n1:70000", "every node must be HOST:PORT"),
        ("127.0.0.1:6379", "not a URL"),
    ],
)
def test_refused_without_the_url(url: str, message: str) -> None:
    problem = check(url)
    assert problem is not None and message in problem
    assert PASSWORD not in problem


def test_config_names_file_key_and_fix(tmp_path: Path) -> None:
    from sipguard.config import load_settings

    base = (Path(__file__).parents[3] / "config" / "sipguard.example.yaml").read_text()
    path = tmp_path / "state.yaml"
    path.write_text(
        base.replace("redis://127.0.0.1:6379/0", f"redis+sentinel://:{PASSWORD}@h:26379")
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    [problem] = [p for p in caught.value.problems if "state.redis_url" in p]
    assert problem.startswith(f"{path}: state.redis_url: no service")
    assert "/SERVICE" in problem and PASSWORD not in problem
    path.write_text(
        base.replace("redis://127.0.0.1:6379/0", "redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    )
    assert load_settings(str(path)).state.redis_url.startswith("redis+cluster://")
