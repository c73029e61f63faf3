"""Bad input in a user's own dataset (kind: folder), the CSV side: each case stops the index rule (before
any image is decoded) with one InputError naming the file, line and column, and writes no index."""

import os

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from smalldl import config as cfg
from smalldl.data.sources import folder as folder_mod
from smalldl.errors import InputError
from smalldl.jobs import data as data_jobs

from ..conftest import ROOT


def make(root, text, images=None):
    """``root`` with labels.csv = ``text`` (written as given: delimiters, blank lines, BOM) and a small PNG
    for each of ``images`` (default: every .png/.jpg path in the text)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    if images is None:
        fields = text.replace(";", ",").replace("\t", ",").replace("\n", ",").split(",")
        images = {f for f in fields if f.endswith((".png", ".jpg"))}
    rng = np.random.default_rng(0)
    for rel in images:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 12), dtype=np.uint8)).save(path, format="PNG")
    return root


def index(tmp_path, root, **params):
    return data_jobs.index(
        dataset_name="mine",
        dataset={"kind": "folder", "params": {"path": str(root), **params}},
        out_parquet=tmp_path / "index.parquet",
    )


def expect_error(tmp_path, root, pattern, **params):
    out = tmp_path / "index.parquet"
    out.unlink(missing_ok=True)
    with pytest.raises(InputError, match=pattern):
        index(tmp_path, root, **params)
    assert not out.exists()


GOOD = "path,patient_id,finding,other\nimgs/a.png,P1,1,0\nimgs/b.png,P1,0,1\nimgs/c.png,P2,1,-1\n"


# ------------------------------------------------------------------ 1. label cells that are not integers


def test_a_yes_in_a_label_column_names_file_line_column_and_value(tmp_path):
    root = make(tmp_path / "mine", GOOD.replace("imgs/b.png,P1,0,1", "imgs/b.png,P1,yes,1"))
    expect_error(tmp_path, root, r"labels\.csv, line 3, column finding: label = 'yes' is not an integer")


def test_a_blank_label_is_an_error_that_says_to_write_minus_one(tmp_path):
    root = make(tmp_path / "mine", GOOD.replace("imgs/c.png,P2,1,-1", "imgs/c.png,P2,1,"))
    expect_error(tmp_path, root, r"labels\.csv, line 4, column other: label is blank: write -1 for uncertain")


def test_line_numbers_are_an_editors_blank_lines_and_quoted_line_breaks_included(tmp_path):
    text = (
        "path,patient_id,note,finding\n"
        "\n"  # line 2: blank, skipped
        'imgs/a.png,P1,"two\nlines",1\n'  # lines 3-4
        "imgs/b.png,P2,x,maybe\n"  # line 5
    )
    root = make(tmp_path / "mine", text, images=["imgs/a.png", "imgs/b.png"])
    expect_error(
        tmp_path,
        root,
        r"labels\.csv, line 5, column finding: label = 'maybe' is not an integer",
        ignore_columns=["note"],
    )


def test_every_other_column_is_a_label_unless_listed_or_ignored(tmp_path):
    root = make(tmp_path / "mine", "path,patient_id,age,sex,finding\nimgs/a.png,P1,61,F,1\nimgs/b.png,P2,70,M,0\n")
    # sex is read as a label: the error says how to declare it
    expect_error(tmp_path, root, r"line 2, column sex: label = 'F' is not an integer.*params\.ignore_columns")
    table = index(tmp_path, root, ignore_columns=["sex", "age"])
    assert [c for c in table.columns if c not in ("image_id", "patient_id", "path", "view")] == ["finding"]
    # params.labels: only those columns are read and checked
    table = index(tmp_path, root, labels=["finding"])
    assert "sex" not in table.columns and list(table["finding"]) == [1, 0]
    expect_error(tmp_path, root, r"missing column\(s\) sx \(params\.ignore_columns\)", ignore_columns=["sx"])


# ------------------------------------------------------------------------------------- 2. delimiters


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_separated_csvs_read_as_the_comma_one(tmp_path, delimiter):
    expected = index(tmp_path, make(tmp_path / "comma", GOOD))
    root = make(tmp_path / "other", GOOD.replace(",", delimiter))
    assert (root / "labels.csv").read_text().startswith(f"path{delimiter}patient_id")
    table = index(tmp_path, root)
    pd.testing.assert_frame_equal(
        table.drop(columns="path"), expected.drop(columns="path")
    )  # same ids, patients, labels


def test_european_excel_export_bom_semicolons_decimal_commas(tmp_path):
    text = "\ufeffpath;patient_id;score;finding\r\nimgs/a,1.png;P1;0,5;1\r\nimgs/b.png;P2;1,25;0\r\n;;;\r\n"
    root = make(tmp_path / "mine", text, images=["imgs/a,1.png", "imgs/b.png"])
    table = index(tmp_path, root, ignore_columns=["score"])
    assert list(table["image_id"]) == ["imgs/a,1", "imgs/b"] and list(table["finding"]) == [1, 0]


def test_a_row_with_a_stray_delimiter_names_its_line_and_the_delimiter(tmp_path):
    root = make(tmp_path / "mine", "path;patient_id;finding\nimgs/a.png;P1;1\nimgs/b.png;P2;0;1\n")
    expect_error(tmp_path, root, r"labels\.csv, line 3: 4 fields, the header \(line 1\) has 3 \(read as ';'-sep")


def test_the_delimiter_is_the_one_whose_header_fields_hold_the_path_column():
    assert folder_mod.detect_delimiter("path;finding,grade;other\n", "path") == ";"
    assert folder_mod.detect_delimiter("file,finding;x\n", "path") == ","  # neither: most fields, first of equals
    assert folder_mod.detect_delimiter("path\n", "path") == ","


def test_a_missing_path_column_shows_the_header_as_read_and_params_delimiter_overrides(tmp_path):
    root = make(tmp_path / "mine", GOOD.replace(",", ";"))
    expect_error(
        tmp_path,
        root,
        r"missing column 'path' .*read as ','-separated, has 'path;patient_id;finding;other'",
        delimiter=",",
    )
    assert len(index(tmp_path, root, delimiter=";")) == 3


def test_a_csv_that_is_not_utf8_names_the_line(tmp_path):
    root = make(tmp_path / "mine", GOOD.replace("P2", "Jos\xe9").encode("latin-1"), images=["imgs/a.png"])
    expect_error(tmp_path, root, r"labels\.csv, line 4: not UTF-8 text .*save the CSV as UTF-8")


# ---------------------------------------------------------------------------------------- 3. image ids


def test_files_sharing_a_name_keep_their_suffix_in_the_id_others_keep_theirs(tmp_path):
    text = "path,patient_id,finding\nimgs/a.png,P1,1\nimgs/a.jpg,P1,0\nimgs/b.png,P2,1\nother/a.png,P3,0\n"
    table = index(tmp_path, make(tmp_path / "mine", text))
    assert list(table["image_id"]) == ["imgs/a.png", "imgs/a.jpg", "imgs/b", "other/a"]
    assert folder_mod.derived_ids(pd.Series(["x/1.png", "x/2.dcm"])) == ["x/1", "x/2"]  # no clash: as before


def test_an_image_listed_twice_under_two_spellings_names_both_lines(tmp_path):
    root = make(tmp_path / "mine", GOOD + "./imgs/a.png,P3,0,0\n")
    expect_error(tmp_path, root, r"line 5: duplicate image_id 'imgs/a' \(line 2 has it too; both list")
    root = make(tmp_path / "ids", "path,image_id,finding\nimgs/a.png,x1,1\nimgs/sub/../a.png,x2,0\n")
    expect_error(
        tmp_path,
        root,
        r"line 3: imgs/sub/\.\./a\.png is the file of line 2 \(imgs/a\.png\) too",
        image_id_column="image_id",
    )
    root = make(tmp_path / "ids2", "path,image_id,finding\nimgs/a.png,x1,1\nimgs/b.png,x1,0\n")
    expect_error(tmp_path, root, r"line 2, column image_id: label = 'x1' .*params\.image_id_column")
    expect_error(
        tmp_path,
        root,
        r"line 3: duplicate image_id 'x1' \(line 2 has it too; two images cannot share",
        image_id_column="image_id",
    )


# ------------------------------------------------------------------------------- 4. paths outside the folder


def test_paths_outside_the_folder_are_refused_unless_allowed(tmp_path):
    outside = make(tmp_path / "elsewhere", "x", images=["imgs/z.png"]) / "imgs" / "z.png"
    root = make(tmp_path / "mine", GOOD)
    for rel in ("../elsewhere/imgs/z.png", str(outside)):
        (root / "labels.csv").write_text(GOOD.replace("imgs/b.png", rel))
        expect_error(tmp_path, root, rf"labels\.csv, line 3: {rel} is outside the folder .*params\.allow_outside")
        table = index(tmp_path, root, allow_outside=True)
        assert os.path.realpath(table.at[1, "path"]) == str(outside.resolve())
    (root / "labels.csv").write_text(GOOD.replace("imgs/b.png", str(root / "imgs" / "b.png")))
    assert len(index(tmp_path, root)) == 3  # absolute but inside: fine


def test_a_symlink_inside_the_folder_that_leads_out_of_it_counts_as_outside(tmp_path):
    outside = make(tmp_path / "elsewhere", "x", images=["z.png"])
    root = make(tmp_path / "mine", GOOD)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "labels.csv").write_text(GOOD.replace("imgs/c.png", "linked/z.png"))
    expect_error(tmp_path, root, r"line 4: linked/z\.png is outside the folder .*resolves to .*elsewhere/z\.png")
    assert len(index(tmp_path, root, allow_outside=True)) == 3
    (root / "imgs" / "alias.png").symlink_to(root / "imgs" / "c.png")  # a link within the folder is fine
    (root / "labels.csv").write_text(GOOD.replace("imgs/c.png", "imgs/alias.png"))
    assert len(index(tmp_path, root)) == 3


def test_the_new_folder_params_are_in_the_schema():
    usage = (ROOT / "docs" / "usage.md").read_text()
    section = usage[usage.index("**Your own data**") :]
    snippet = section[section.index("```yaml") + len("```yaml") : section.index("```", section.index("```yaml") + 7)]
    conf = yaml.safe_load(snippet)
    conf["datasets"]["mine"]["params"].update(delimiter="\t", ignore_columns=["age"], allow_outside=True)
    conf["study"] = {"sizes": [50]}  # listed: the schema alone, no folder to count a pool in
    assert cfg.validate(conf, check_pools=False)["datasets"]["mine"]["params"]["delimiter"] == "\t"
    conf["datasets"]["mine"]["params"]["delimiter"] = "|"
    with pytest.raises(InputError, match=r"datasets\.mine\.params\.delimiter"):
        cfg.validate(conf, check_pools=False)


def test_a_misspelled_label_column_names_the_csv_and_its_label_columns(tmp_path):
    """The index keeps the CSV it was read from: a task's label that is not a column of it names the CSV,
    the label columns it has and the closest one (issue 27)."""
    from smalldl.data import splits

    root = make(tmp_path / "f", "path,patient_id,nodule,effusion\na.png,P1,1,0\nb.png,P2,0,1\n")
    index(tmp_path, root)
    table = pd.read_parquet(tmp_path / "index.parquet")
    task = {"dataset": "mine", "type": "binary", "labels": ["nodul"]}
    with pytest.raises(InputError) as info:
        splits.task_table(table, "t", task)
    message = str(info.value)
    assert f"label column(s) nodul not a column of {root / 'labels.csv'}" in message
    assert "did you mean nodule?" in message and "its label columns: nodule, effusion" in message


def test_a_split_without_positives_gives_its_counts_and_the_key_to_raise():
    from smalldl.data import splits

    rows = [{"image_id": f"i{i}", "patient_id": f"P{i}", "nodule": int(i < 2)} for i in range(40)]
    table = pd.DataFrame(rows)
    task = cfg.validate(
        {
            "datasets": {"d": {"kind": "fractal"}},
            "tasks": {"t": {"dataset": "d", "type": "binary", "labels": ["nodule"]}},
        }
    )["tasks"]["t"]
    with pytest.raises(InputError) as info:
        for seed in range(20):  # some seed puts both positives in one split
            splits.make_split(splits.task_table(table, "t", task), "t", task, seed, "d")
    message = str(info.value)
    assert "no positive nodule images in the" in message and "0 positive" in message and "negative" in message
    assert "an AUC needs at least 1 of each" in message and "_fraction (now" in message
