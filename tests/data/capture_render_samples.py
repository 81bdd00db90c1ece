"""Capture the result data of every command, as `--json` prints it on the devstack, for tests/test_render.py.

    .deps/venv/bin/python -m devstack up --dir /tmp/samples-stack
    .deps/venv/bin/python tests/data/capture_render_samples.py /tmp/samples-stack > tests/data/render_samples.json

Each sample is one real run's JSON object without the envelope (command, warnings, error), keyed by
command; `exit_code` stays so the test renders partial outcomes (exit 3/4) as the CLI does.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(stack_dir: str) -> None:
    env = {}
    for line in Path(stack_dir, "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    env.update(PATH="/usr/bin:/bin", HOME="/root", LANG="C.UTF-8")
    seller = env["SELLER_BASE_URL"] + "/services/"
    samples: dict[str, list] = {}

    def run(*args: str) -> None:
        proc = subprocess.run([sys.executable, str(REPO / "buy.py"), *args, "--json"], env=env, capture_output=True,
                              text=True, timeout=300)
        doc = json.loads(proc.stdout)
        if isinstance(doc, dict):
            for key in ("command", "warnings", "error"):
                doc.pop(key, None)
        else:
            doc = {"purchases": doc, "exit_code": proc.returncode}
        samples.setdefault(args[0], []).append(doc)
        print(f"{' '.join(args)} -> {proc.returncode}", file=sys.stderr)

    run("default", "show")
    run("probe", seller + "aya")
    run("balance")
    run("env")
    run("buy", "cap-aya", "--endpoint", seller + "aya", "--model", "aya-32b", "--count", "2")
    run("buy", "cap-aya", "--endpoint", seller + "aya", "--model", "aya-32b", "--count", "1", "--auto-refill")
    run("list")
    run("status", "cap-aya")
    run("refill", "cap-aya", "--count", "1")
    run("audit")
    run("buy", "cap-jamba", "--endpoint", seller + "jamba", "--model", "jamba-2", "--count", "3", "--set-default")
    run("default", "show")
    run("default", "set", "paid/jamba-2", "--no-canary")
    run("process", "--all")
    run("pay", seller + "nemo", "--type", "inference", "--message", "hi", "--model", "nemo-3")
    run("pay-agent", seller + "aya", "--message", "hi")
    run("go", seller + "agent")
    run("go", seller + "nemo", "--message", "hi")
    run("go", seller + "weather/today")
    run("siwx", seller + "members/data")
    run("siwx", seller + "members/data", "--fetch")
    run("default", "restore")
    run("default", "restore")
    run("default", "set", "paid/not-bought", "--no-canary")
    run("remove", "cap-aya", "--revoke")
    run("remove", "cap-jamba")
    run("audit")
    run("schedule")
    run("schedule", "--remove")
    json.dump(samples, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
