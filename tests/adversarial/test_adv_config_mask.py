"""ADVERSARIAL (wt-R): an expanded value with a run of spaces leaks through a config error.

parse_settings masks the error line *after* format_validation_error folded its
whitespace (" ".join(message.split())), so a value registered as
"tenant-secret  token" is no longer found in "tenant-secret token".
Expected to FAIL on wt-R's tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFIG = """\
servicenow:
  instance_url: ${SN_URL}
  auth: {type: basic, username: admin, password: admin123}
kafka:
  bootstrap_servers: localhost:1
"""


def test_an_expanded_value_with_two_spaces_is_masked_in_the_error_line(tmp_path: Path) -> None:
    config = tmp_path / "sncli.yaml"
    config.write_text(CONFIG)
    value = "tenant-secret  token-9f8e7d"
    result = subprocess.run([sys.executable, "-m", "sncli", "--config", str(config), "config", "show"],
                            capture_output=True, text=True, timeout=30, env={**os.environ, "SN_URL": value})
    print(result.stderr)
    assert result.returncode == 2
    assert "token-9f8e7d" not in result.stderr, "an expanded value was printed"
