"""``lowbit nas`` end to end (tiny budget, the NASWOT proxy), and its parser constants."""
from __future__ import annotations

import json

from lowbit import nas_cmd
from lowbit.cli import main
from lowbit.nas import COSTS, EVALUATORS, STRATEGIES, EvalSettings, load_model, space_names
from lowbit.nas.strategies import DEFAULT_POPULATION


def test_parser_constants_match_the_library():
    d = EvalSettings()
    assert nas_cmd.SPACES == space_names()
    assert nas_cmd.STRATEGIES == STRATEGIES
    assert (nas_cmd.EVALUATORS, nas_cmd.COSTS) == (EVALUATORS, COSTS)
    assert nas_cmd.DEFAULTS == {"profile": d.profile, "evaluator": d.evaluator,
                                "epochs": d.epochs, "qat_epochs": d.qat_epochs, "cost": d.cost,
                                "population": DEFAULT_POPULATION}


def test_nas_end_to_end(tmp_path, capsys):
    db, png, pt = tmp_path / "n.sqlite", tmp_path / "front.png", tmp_path / "best.pt"
    args = ["nas", "--space", "digits-mbv2-bits", "--budget", "3", "--strategy", "random",
            "--evaluator", "proxy", "--db", str(db), "--seed", "4",
            "--objectives", "accuracy,latency,energy"]
    assert main(args + ["--json", "--plot", str(png), "--export", str(pt), "--epochs", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["evaluated"] == out["summary"]["new"] == 3
    assert out["summary"]["objectives"] == ["accuracy", "latency", "energy"]
    front = out["front"]
    assert 1 <= len(front) <= 3 and all(r["latency_s"] > 0 for r in front)
    assert png.stat().st_size > 1000
    model, cand, space = load_model(pt)
    assert cand.to_dict() == out["export"]["candidate"] and space.name == "digits-mbv2-bits"

    assert main(args) == 0                       # the rerun resumes: nothing new
    text = capsys.readouterr().out
    assert "3 candidates (0 evaluated now, 3 from" in text and "Pareto front" in text


def test_nas_errors_are_one_line(tmp_path, capsys):
    code = main(["nas", "--objectives", "latency", "--db", str(tmp_path / "x.sqlite"),
                 "--evaluator", "proxy"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("lowbit: error: objectives: must be")
    (tmp_path / "bad.sqlite").write_text("not a database")
    code = main(["nas", "--budget", "1", "--db", str(tmp_path / "bad.sqlite"),
                 "--evaluator", "proxy"])
    assert code == 1 and "not a NAS database" in capsys.readouterr().err
