"""Bad input at the data boundary: files no one here wrote, read by the one reader (`mlops_kit.tables`) and the data steps.

Each case was silent or unclear before: a duplicated column fed the model twice, UTF-16 was read as Windows-1252,
dates in several spellings were dropped, `inf` reached sklearn, nested Parquet columns crashed the datasets step,
tiny files failed late, and a batch without a contract column passed.
"""
import json
import sqlite3
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from mlops_kit.data.ingest import ingest
from mlops_kit.data.validate import check_batch, derive_contract, validate
from mlops_kit.data.wrangle import wrangle
from mlops_kit.datasets import materialize_data
from mlops_kit.design import spec_for_run, spec_from_data
from mlops_kit.runfolder import read_quarantine
from mlops_kit.tables import MIN_ROWS, TABLE_KINDS, DataFileError, read_table, sniff_csv


def frame(n=40, seed=0):
    "A small binary-classification table: two numbers, a category, a target."
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"income": rng.normal(50, 10, n).round(2), "age": rng.integers(18, 80, n),
                         "plan": rng.choice(["basic", "premium"], n), "bought": np.tile(["yes", "no"], n)[:n]})


def run_steps(tmp_path, path, target, until="wrangle", spec=None):
    "design (spec_for_run), datasets, ingest, validate and wrangle on `path`, as the pipeline chains them."
    spec = spec or spec_for_run(data=str(path), target=target)
    run = tmp_path / "run"
    materialize_data(run, str(path), min_rows=MIN_ROWS)
    ingest(run, spec)
    res = {"spec": spec, "run": run, "validate": validate(run, spec)}
    if until == "wrangle": res["wrangle"] = wrangle(run, spec)
    return res


# --- one list of extensions: a file the design step accepts is accepted by every later step ------------------------

def write_as(df, path):
    kind = TABLE_KINDS[path.suffix]
    if kind == "csv": df.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    elif kind == "parquet": df.to_parquet(path, index=False)
    elif kind == "jsonl": df.to_json(path, orient="records", lines=True)
    else:
        con = sqlite3.connect(path)
        df.to_sql("people", con, index=False)
        con.close()
    return path


@pytest.mark.parametrize("ext", sorted(TABLE_KINDS))
def test_every_extension_the_design_step_accepts_goes_through_datasets_and_ingest(tmp_path, ext):
    df = frame()
    path = write_as(df, tmp_path / f"people{ext}")
    spec = spec_for_run(data=str(path), target="bought")
    assert spec.data_sources[0].kind == TABLE_KINDS[ext]
    cat = materialize_data(tmp_path / "run", str(path), min_rows=MIN_ROWS)
    assert cat.kind[0] == TABLE_KINDS[ext] and cat.rows[0] == len(df)
    table = ingest(tmp_path / "run", spec).table
    assert len(table) == len(df)
    assert table.drop(columns="_row_id").columns.tolist() == df.columns.tolist()


@pytest.mark.parametrize("ext", [".xlsx", ".json", ""])
def test_an_extension_no_step_reads_is_refused_by_the_design_and_datasets_steps_alike(tmp_path, ext):
    path = tmp_path / f"people{ext}"
    path.write_text("income,bought\n1,yes\n")
    for step in (lambda: spec_for_run(data=str(path), target="bought"), lambda: materialize_data(tmp_path / "run", str(path))):
        with pytest.raises(DataFileError, match=r"unsupported file type .*the kit reads \.csv and \.parquet files"):
            step()
    assert not (tmp_path / "run").exists()


# --- duplicated column names ---------------------------------------------------------------------------------------

def test_duplicated_column_names_are_refused_not_renamed(tmp_path):
    df = frame()
    path = tmp_path / "dup.csv"
    lines = ["id,income,age,income,bought"] + [f"{i},{r.income},{r.age},{r.income * 0.8:.2f},{r.bought}" for i, r in df.iterrows()]
    path.write_text("\n".join(lines) + "\n")
    for step in (lambda: read_table(path), lambda: spec_for_run(data=str(path), target="bought"),
                 lambda: materialize_data(tmp_path / "run", str(path))):
        with pytest.raises(DataFileError) as e:
            step()
        msg = str(e.value)
        assert "dup.csv has duplicated column names: 'income' (columns 2, 4)" in msg
        assert "'income.1'" in msg and "rename or remove the copies" in msg
    assert not (tmp_path / "run").exists()


def test_duplicated_names_in_parquet_and_jsonl_are_refused_too(tmp_path):
    con = sqlite3.connect(tmp_path / "t.db"); con.execute("CREATE TABLE t (a, b)"); con.execute("INSERT INTO t VALUES (1, 2)")
    con.commit(); con.close()
    with pytest.raises(DataFileError, match="duplicated column names: 'a'"):
        read_table(tmp_path / "t.db", query="SELECT a, b AS a FROM t")
    (tmp_path / "t.jsonl").write_text('{"a": 1, "b": 2}\n{"a": 1, "b": 2, "b": 3}\n')
    with pytest.raises(DataFileError, match="line 2: key 'b' appears twice"):
        read_table(tmp_path / "t.jsonl")


# --- encodings -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec, named", [("utf-16", "utf-16"), ("utf-16-le", "utf-16-le"), ("utf-16-be", "utf-16-be"),
                                          ("utf-32", "utf-32")])
def test_a_utf16_file_is_read_correctly_and_its_encoding_recorded(tmp_path, codec, named):
    df = frame().rename(columns={"income": "rendimento_€", "plan": "plano"})
    df["cidade"] = np.tile(["Évora", "Porto", "Coimbra"], len(df))[:len(df)]
    path = tmp_path / "export.csv"
    path.write_bytes(df.to_csv(index=False, sep="\t").encode(codec))
    assert sniff_csv(path) == (named, "\t")
    got = read_table(path)
    assert got.columns.tolist() == df.columns.tolist()          # no NUL bytes, no mojibake
    assert got["cidade"].tolist() == df["cidade"].tolist()
    res = run_steps(tmp_path, path, "bought", until="validate")
    prov = json.loads((res["run"] / "data" / "provenance.json").read_text())["sources"][0]
    assert (prov["encoding"], prov["delimiter"]) == (named, "\t")
    assert "rendimento_€" in prov["column_names"]


def test_a_file_that_cannot_be_decoded_names_the_encoding(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"a,b\n" + b"1,2\n" * 300_000 + "3,\u00e9\n".encode("cp1252"))  # UTF-8 for a megabyte, then not
    with pytest.raises(DataFileError, match="mixed.csv could not be decoded as utf-8.*save the file as UTF-8"):
        read_table(path)


# --- dates in several formats --------------------------------------------------------------------------------------

def test_a_date_column_in_several_formats_is_read_as_dates(tmp_path):
    df = frame(60)
    days = pd.date_range("2024-01-01", periods=len(df), freq="D")
    spellings = [lambda d: d.strftime("%Y-%m-%d"), lambda d: d.strftime("%d/%m/%Y"), lambda d: d.strftime("%b %d %Y")]
    df["signed_up"] = [spellings[i % 3](d) for i, d in enumerate(days)]
    path = tmp_path / "people.csv"
    df.to_csv(path, index=False)
    res = run_steps(tmp_path, path, "bought")
    contract = json.loads((res["run"] / "data" / "contract.json").read_text())
    assert {c["name"]: c["kind"] for c in contract["columns"]}["signed_up"] == "date"
    wrangled = pd.read_parquet(res["run"] / "data" / "wrangled.parquet")
    assert pd.api.types.is_datetime64_any_dtype(wrangled["signed_up"])
    assert wrangled["signed_up"].tolist() == list(days)


def test_a_date_column_that_mostly_cannot_be_read_is_named(tmp_path, capsys):
    df = frame(60)
    df["signed_up"] = ["2024-01-05" if i % 2 else f"sometime in week {i}" for i in range(len(df))]
    contract = derive_contract(df, spec_from_data(write_as(df, tmp_path / "p.csv"), "bought"))
    assert contract.columns["signed_up"].kind != "date"
    out = capsys.readouterr().out
    assert "column 'signed_up' looks like dates, but only 50% of its values read as dates" in out
    assert "pin kind: date" in out


# --- infinite values -----------------------------------------------------------------------------------------------

def test_infinite_values_are_flagged_by_validate_and_never_kept_by_wrangle(tmp_path):
    df = frame(60)
    df.loc[[3, 7], "income"] = [np.inf, -np.inf]
    path = tmp_path / "inf.csv"
    df.to_csv(path, index=False)
    res = run_steps(tmp_path, path, "bought")
    issues = res["validate"].issues
    bad = issues[(issues.column == "income") & (issues.check == "type_error")]
    assert sorted(bad._row_id) == [3, 7]
    wrangled = pd.read_parquet(res["run"] / "data" / "wrangled.parquet")
    assert np.isfinite(wrangled["income"].dropna()).all()
    assert wrangled.set_index("_row_id").loc[[3, 7], "income"].isna().all()
    assert wrangled.set_index("_row_id").loc[[3, 7], "income_missing"].tolist() == [1, 1]   # flagged, not hidden
    log = res["wrangle"].report
    note = log[(log.column == "income") & (log.op == "parse_number")].note.iloc[0]
    assert note == "2 unreadable values became missing (2 of them infinite: not a measurement)"


def test_infinite_values_are_quarantined_with_the_column_named_when_type_errors_block(tmp_path):
    df = frame(60)
    df.loc[5, "income"] = np.inf
    path = tmp_path / "inf.csv"
    df.to_csv(path, index=False)
    spec = spec_for_run(data=str(path), target="bought")
    dc = spec.data_checks
    spec = replace(spec, data_checks=replace(dc, blocking=dc.blocking + ["type_error"],
                                             warning=[w for w in dc.warning if w != "type_error"]))
    res = run_steps(tmp_path, path, "bought", until="validate", spec=spec)
    q = read_quarantine(res["run"])
    assert q._row_id.tolist() == [5]
    assert q.reason.iloc[0] == "type_error: income 'inf' is infinite, not a measurement"


# --- nested values -------------------------------------------------------------------------------------------------

def test_a_parquet_file_with_list_and_struct_columns_is_refused_with_their_names(tmp_path):
    df = frame()
    df["tags"] = [["a", "b"] if i % 2 else [] for i in range(len(df))]
    df["address"] = [{"city": "Porto", "zip": "4000"}] * len(df)
    path = tmp_path / "nested.parquet"
    df.to_parquet(path)
    for step in (lambda: spec_for_run(data=str(path), target="bought"), lambda: materialize_data(tmp_path / "run", str(path))):
        with pytest.raises(DataFileError) as e:
            step()
        assert "columns 'tags', 'address' hold lists or records" in str(e.value)
        assert "flatten them" in str(e.value) and "json.dumps" in str(e.value)
        assert "unhashable" not in str(e.value)   # our message, not pandas'
    assert not (tmp_path / "run").exists()


# --- too few rows --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, MIN_ROWS - 1])
def test_too_few_rows_are_refused_up_front_with_the_minimum(tmp_path, n):
    path = tmp_path / "tiny.csv"
    frame(n).to_csv(path, index=False)
    expected = f"tiny.csv has {n} data row{'s' if n != 1 else ''}: too few rows. The pipeline needs at least {MIN_ROWS}"
    with pytest.raises(DataFileError, match=expected):
        spec_for_run(data=str(path), target="bought")                         # the design step
    with pytest.raises(DataFileError, match=expected):
        materialize_data(tmp_path / "run", str(path), min_rows=MIN_ROWS)     # the datasets step (a spec given with -p spec)
    assert not (tmp_path / "run").exists()


def test_the_minimum_itself_is_enough(tmp_path):
    path = tmp_path / "small.csv"
    frame(MIN_ROWS).to_csv(path, index=False)
    assert spec_for_run(data=str(path), target="bought").prediction.task == "binary"
    assert materialize_data(tmp_path / "run", str(path), min_rows=MIN_ROWS).rows[0] == MIN_ROWS


# --- a batch without a contract column -----------------------------------------------------------------------------

def test_a_batch_missing_a_contract_column_quarantines_every_row_naming_it(tmp_path):
    df = frame(60)
    contract = derive_contract(df, spec_from_data(write_as(df, tmp_path / "p.csv"), "bought"))
    res = check_batch(df.drop(columns=["income", "plan"]), contract)
    assert len(res.kept) == 0 and len(res.quarantined) == len(df) and not res.passed
    assert res.quarantined.reason.str.startswith("missing_column: the table has no column income, which the contract requires").all()
    assert res.quarantined.reason.str.contains("missing_column: the table has no column plan, which").all()   # a category
    assert res.summary["missing_columns"] == ["income", "plan"]
    report = res.report.set_index("column")
    assert (bool(report.loc["income", "in_table"]), report.loc["income", "blocking_issues"]) == (False, len(df))
    # a batch to score has no target yet: that alone is not a problem
    unlabelled = check_batch(df.drop(columns=["bought"]), contract)
    assert len(unlabelled.kept) == len(df) and unlabelled.passed


def test_the_validate_step_fails_on_a_spec_column_the_data_lacks(tmp_path):
    df = frame(60)
    path = tmp_path / "p.csv"
    df.to_csv(path, index=False)
    spec = spec_for_run(data=str(path), target="bought")
    dc = spec.data_checks
    spec = replace(spec, data_checks=replace(dc, columns={"tenure": {"kind": "integer", "min": 0}}))
    with pytest.raises(Exception, match="tenure"):
        run_steps(tmp_path, path, "bought", until="validate", spec=spec)
    q = read_quarantine(tmp_path / "run")
    assert len(q) == len(df) and q.reason.str.contains("no column tenure").all()
