import json
import subprocess
import sys
from pathlib import Path

from .conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, fresh: bool = True) -> subprocess.CompletedProcess:
    if fresh:
        return subprocess.run([sys.executable, "-m", "personalization", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
    from personalization.cli import main  # in-process: same code path, no interpreter start-up

    return subprocess.CompletedProcess(args, main(list(args)), "", "")


def _rows():
    train, profiles = [], []
    for u in range(6):
        likes = "dogs" if u % 2 else "cats"
        other = "cats" if u % 2 else "dogs"
        profiles.append({"user_id": f"u{u}", "age": "18-24" if u % 2 else "65+", "gender": "female"})
        for i in range(8):
            prompt = "which pet please" if i % 2 else [{"role": "user", "content": "help me choose"}]
            train.append({"user_id": f"u{u}", "prompt": prompt, "chosen": f"i like {likes} {'very ' * (i % 3)}",
                          "rejected": f"i like {other} {'not ' * (i % 2)}"})
    return train, profiles


def test_it_fits_and_predicts_end_to_end(tmp_path, tiny_encoder_dir):
    train, profiles = _rows()
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "profiles.jsonl", profiles + [{"user_id": "new1", "age": "18-24"}])
    write_jsonl(tmp_path / "context.jsonl", [
        {"user_id": "new1", "prompt": "which pet", "chosen": "i like dogs", "rejected": "i like cats"},
    ])
    tests = [
        {"id": "t1", "user_id": "u1", "prompt": "which pet", "a": "i like dogs", "b": "i like cats"},
        {"id": "t2", "user_id": "u0", "prompt": "which pet", "a": "i like dogs", "b": "i like cats"},
        {"id": "t3", "user_id": "new1", "prompt": "which pet", "a": "i like dogs", "b": "i like cats"},
        {"id": "t4", "user_id": "new2", "prompt": "which pet", "a": "i like dogs", "b": "i like cats"},
    ]
    write_jsonl(tmp_path / "test.jsonl", tests)
    for kind in ("vpl", "bt", "pal"):
        fresh = kind == "vpl"  # one model through real subprocesses, the others in-process (faster)
        out = tmp_path / kind
        res = _run("fit", "--train", str(tmp_path / "train.jsonl"), "--profiles", str(tmp_path / "profiles.jsonl"),
                   "--model", kind, "--out", str(out), "--encoder", str(tiny_encoder_dir), "--epochs", "40",
                   "--seed", "1", "--quiet", fresh=fresh)
        assert res.returncode == 0, res.stderr
        assert (out / "model.safetensors").exists() and (out / "config.json").exists()
        meta = json.loads((out / "config.json").read_text())
        if kind != "bt":  # the population guard's choice and held-out figures are saved with the model
            guard = meta["info"]["guard"]
            assert guard["chosen"] in [c["name"] for c in guard["candidates"]]
            assert {"acc", "ce", "ece"} <= set(guard["heldout"]["seen"])
            assert abs(meta["config"]["temperature"] - guard["temperature"]) < 1e-3
        if fresh:
            assert "population guard (held-out users): chose" in res.stderr and "ECE" in res.stderr
        res = _run("predict", "--model", str(out), "--pairs", str(tmp_path / "test.jsonl"),
                   "--context", str(tmp_path / "context.jsonl"), "--profiles", str(tmp_path / "profiles.jsonl"),
                   "--out", str(tmp_path / f"{kind}.jsonl"), "--quiet", fresh=fresh)
        assert res.returncode == 0, res.stderr
        preds = [json.loads(line) for line in (tmp_path / f"{kind}.jsonl").read_text().splitlines()]
        assert [p["id"] for p in preds] == ["t1", "t2", "t3", "t4"]
        assert all(0.0 < p["p_a"] < 1.0 for p in preds)
        if kind != "bt":  # the dog person (u1) prefers dogs more than the cat person (u0)
            assert preds[0]["p_a"] > preds[1]["p_a"]


def test_it_reports_malformed_rows_with_exit_code_2(tmp_path):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"user_id": "u1", "prompt": "p", "chosen": "a", "rejected": "b"}\n{"user_id": "u2", "prompt": 3}\n')
    res = _run("fit", "--train", str(bad), "--model", "bt", "--out", str(tmp_path / "m"))
    assert res.returncode == 2
    assert f"{bad}:2:" in res.stderr
    assert "Traceback" not in res.stderr
