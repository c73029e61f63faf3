"""The README's demo results are generated from a measured demo run (docs/demo, tools/demo_record.py),
never written by hand: the README block must be render(docs/demo), and docs/demo must come from the
demo config of this commit."""

import json
import shutil

import pandas as pd
import pytest
import yaml

from smalldl import config as cfg

from ..conftest import ROOT, load_script

demo = load_script("tools/demo_record.py")


def test_the_readme_demo_block_is_the_measured_demo_run():
    block = demo.readme_block((ROOT / "README.md").read_text())
    assert block == demo.render(demo.load()), "run `python tools/demo_record.py update RUN_DIR ...`"


def test_the_measured_run_is_of_this_demo_config():
    """Changing a value of config.yaml without measuring the demo again fails here (its comments may change)."""
    measured = yaml.safe_load((ROOT / "docs/demo/config.yaml").read_text())
    assert measured == yaml.safe_load((ROOT / "config.yaml").read_text()), (
        "config.yaml changed since the demo was measured: run it again and `python tools/demo_record.py update`"
    )


def test_the_measured_runs_are_the_plan_of_the_demo_config():
    config = cfg.validate(yaml.safe_load((ROOT / "config.yaml").read_text()))
    summary = demo.load()["summary"]
    study = config["study"]
    cnn = summary[summary["family"] == "cnn"]
    assert sorted(cnn["task"].unique()) == sorted(study["targets"])
    assert sorted(cnn["n"].unique()) == sorted(study["sizes"])
    assert sorted(cnn["seed"].unique()) == sorted(study["seeds"])
    possible = set(cfg.possible_stage_recipes(config))
    assert set(cnn["recipe"]) <= possible
    # every (task, recipe) at every size and seed: nothing left out of the table
    per_recipe = cnn.groupby(["task", "recipe"]).size()
    assert (per_recipe == len(study["sizes"]) * len(study["seeds"])).all()
    stages = demo.load()["stages"]
    assert len(stages) == len(study["targets"]) * len(study["stages"]["vary"])
    for _, row in stages.iterrows():  # the table's recipes are those the stages compared
        assert set(row["candidates"].split(";")) <= set(cnn[cnn["task"] == row["task"]]["recipe"])


@pytest.fixture
def copy_of_demo(tmp_path):
    folder = tmp_path / "demo"
    shutil.copytree(ROOT / "docs/demo", folder)
    return folder


def test_a_number_off_by_more_than_rounding_changes_the_block(copy_of_demo):
    before = demo.render(demo.load(copy_of_demo))
    summary = pd.read_csv(copy_of_demo / "summary.csv")
    first = summary.index[summary["family"] == "cnn"][0]
    summary.loc[first, "headline_auc"] += 0.01  # the mean over 2 seeds moves by 0.005: the 3rd decimal
    summary.to_csv(copy_of_demo / "summary.csv", index=False)
    assert demo.render(demo.load(copy_of_demo)) != before
    findings = pd.read_csv(copy_of_demo / "findings.csv")
    ran = findings.index[(findings["verdict"] != "not run") & (findings["n"].astype(str) == "all")][0]
    findings.loc[ran, "verdict"] = "contradicted" if findings.loc[ran, "verdict"] != "contradicted" else "holds"
    findings.to_csv(copy_of_demo / "findings.csv", index=False)
    after = demo.render(demo.load(copy_of_demo))
    assert after.count("**contradicted**") != before.count("**contradicted**")


def test_the_block_states_the_measured_time_and_jobs(copy_of_demo):
    run = json.loads((copy_of_demo / "run.json").read_text())
    text = demo.render(demo.load(copy_of_demo))
    minutes, seconds = divmod(round(run["seconds"]), 60)
    assert f"**{minutes} min {seconds} s**" in text and f"for {run['jobs']} jobs" in text
    assert run["seconds"] <= 15 * 60, "the demo's budget: 15 minutes on 2 cores"


def test_the_check_command_fails_on_a_hand_edited_readme(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    block = demo.readme_block(text)
    readme.write_text(text.replace(block, block.replace("| emphysema |", "| emphysema  |", 1)))
    monkeypatch.setattr(demo, "README", readme)
    assert demo.main(["check"]) == 1
    readme.write_text(text)
    assert demo.main(["check"]) == 0


def test_a_phantom_note_appears_only_with_the_verdict_it_explains(copy_of_demo):
    findings = pd.read_csv(copy_of_demo / "findings.csv")
    rows = (findings["claim"] == "transfer_vs_radiomics") & (findings["task"] == "emphysema")
    for verdict, shown in (("holds", False), ("inconclusive", True), ("contradicted", True)):
        findings.loc[rows, "verdict"] = verdict
        notes = demo.phantom_notes(findings)
        assert any("radiomics features" in line for line in notes) == shown, verdict
    extractor = (findings["claim"] == "source_vs_none") & findings["comparison"].str.contains("-extractor-")
    findings.loc[findings["claim"] == "source_vs_none", "verdict"] = "holds"
    assert not any("feature extractor" in line for line in demo.phantom_notes(findings))
    findings.loc[(findings["claim"] == "source_vs_none") & ~extractor, "verdict"] = "contradicted"
    assert not any("feature extractor" in line for line in demo.phantom_notes(findings))  # not the extractor's
    findings.loc[extractor, "verdict"] = "contradicted"
    assert any("feature extractor" in line for line in demo.phantom_notes(findings))


def test_an_unfinished_run_is_refused_by_name_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    shutil.copyfile(ROOT / "config.yaml", run / "config.yaml")
    for name in ("summary.csv", "stages.csv", "source_models.csv"):  # findings.csv missing
        shutil.copyfile(ROOT / "docs/demo" / name, run / "results" / name)
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    monkeypatch.setattr(demo, "README", readme)
    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path / "demo")
    with pytest.raises(FileNotFoundError, match="findings.csv"):
        demo.update(run, seconds=600, jobs=200, machine="m", folder=tmp_path / "demo")
    assert not (tmp_path / "demo").exists() and readme.read_text() == (ROOT / "README.md").read_text()
    assert demo.main(["update", str(run), "--seconds", "600", "--jobs", "200"]) == 1
    assert "findings.csv" in capsys.readouterr().err


def test_the_recorded_demo_is_this_code_s():
    """docs/demo/fingerprints.json records, per file of the numeric path (library, rules, scripts, demo
    config, schema, pins), what the recorded run's code was: any change that can move a number of the block
    comes with a re-recorded block."""
    changed = demo.changed_since_recorded()
    assert not changed, (
        f"{len(changed)} file(s) of the numeric path changed since the demo block was recorded "
        f"({', '.join(changed[:6])}{' ...' if len(changed) > 6 else ''}): run the demo "
        "(`snakemake --cores all`) and `python tools/demo_record.py update RUN_DIR --seconds S --jobs J`"
    )
    assert json.loads((ROOT / "docs/demo/run.json").read_text())["fingerprint"] == demo.fingerprint(demo.fingerprints())


def test_the_fingerprint_ignores_comments_and_docstrings_but_not_code(tmp_path):
    (tmp_path / "smalldl").mkdir()
    module = tmp_path / "smalldl" / "m.py"
    module.write_text('"""Doc."""\n\n\ndef f(x):\n    """Doc."""\n    return x + 1  # one\n')
    (tmp_path / "config.yaml").write_text("a: 1  # the demo\n")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.smk").write_text("# a rule\nrule r:\n    shell: 'true'\n")
    before = demo.fingerprints(tmp_path)
    module.write_text('"""Other words."""\n\n\ndef f(x):\n    return x + 1\n')
    (tmp_path / "config.yaml").write_text("# a comment\na: 1\n")
    (tmp_path / "rules" / "r.smk").write_text("# another comment\nrule r:\n    shell: 'true'\n")
    assert demo.fingerprints(tmp_path) == before
    module.write_text('"""Doc."""\n\n\ndef f(x):\n    return x + 2\n')
    (tmp_path / "config.yaml").write_text("a: 2\n")
    after = demo.fingerprints(tmp_path)
    assert {f for f in after if after[f] != before[f]} == {"smalldl/m.py", "config.yaml"}


def test_readme_command_1_states_the_recorded_time():
    """Command 1's comment says how long the demo takes, from the recorded run (issue 29), never a stale
    number: re-recording the demo without updating the comment fails here."""
    run = json.loads((ROOT / "docs/demo/run.json").read_text())
    minutes, seconds = divmod(round(run["seconds"]), 60)
    command_1 = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("# 1."))
    assert f"{minutes} min {seconds} s measured on {run['date']}" in command_1, command_1
    assert f"about {round(run['seconds'] / 60)} min on 2 idle cores" in command_1, command_1


def test_each_claim_shows_the_holm_p_its_verdict_rests_on(copy_of_demo):
    """An interval that excludes 0 with an *inconclusive* verdict is read right only beside the adjusted p."""
    text = demo.render(demo.load(copy_of_demo))
    assert "| difference [95% CI] | p (Holm) | verdict |" in text and "| 0.012 | **" not in text
    findings = pd.read_csv(copy_of_demo / "findings.csv")
    row = findings.index[(findings["verdict"] != "not run") & (findings["n"].astype(str) == "all")][0]
    findings.loc[row, "p_holm"] = 0.0123
    findings.to_csv(copy_of_demo / "findings.csv", index=False)
    assert "| 0.012 | **" in demo.render(demo.load(copy_of_demo))
