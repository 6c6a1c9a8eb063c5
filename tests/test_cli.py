"""The command line, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from xpdl.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_train_default_on_bundled_digits(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    assert main(["train", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    acc = float(text.split("test accuracy:")[1].split()[0])
    assert acc >= 0.95
    assert str(out) in text and out.exists()
    import xpdl

    model = xpdl.load(str(out))
    X, y = xpdl.datasets.load_digits()
    assert (model.predict(X / 16) == y).mean() > 0.95


@pytest.mark.parametrize("model", ["logistic", "linear"])
def test_train_other_models_on_csv_and_npz(tmp_path, capsys, model):
    g = np.random.default_rng(0)
    X = g.normal(size=(200, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) if model == "logistic" else X @ [1.0, 2.0, -1.0]
    csv = tmp_path / "d.csv"
    with open(csv, "w") as f:
        f.write("a,b,c,label\n")
        for row, t in zip(X, y):
            f.write(",".join(f"{v:.6f}" for v in row) + f",{t}\n")
    assert main(["train", "--model", model, "--dataset", str(csv), "--epochs", "20",
                 "--out", str(tmp_path / "m.safetensors")]) == 0
    text = capsys.readouterr().out
    key = "test R^2:" if model == "linear" else "test accuracy:"
    score = float(text.split(key)[1].split()[0])
    assert score > 0.9
    npz = tmp_path / "d.npz"
    np.savez(npz, X=X, y=y)
    assert main(["train", "--model", model, "--dataset", str(npz), "--epochs", "5",
                 "--out", str(tmp_path / "m2.safetensors")]) == 0


def test_missing_backend_and_bad_dataset_give_one_line(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        assert main(["train", "--backend", "cupy"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cupy" in err[0] and "not available" in err[0]
    assert main(["train", "--dataset", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]


def test_bad_arguments_exit_non_zero_without_traceback():
    r = subprocess.run([sys.executable, "-m", "xpdl", "train", "--epochs", "many"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "invalid int" in r.stderr
    r = subprocess.run([sys.executable, "-m", "xpdl", "train", "--epochs", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_info_lists_backends(capsys, recwarn):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "numpy" in text and "available" in text and "array_api_strict" in text
    # only devices arrays can be made on: JAX's info listed None, torch's the meta device
    # (with a UserWarning from the listing)
    devices = [ln.split("devices: ")[1].split(", ") for ln in text.splitlines()
               if "devices: " in ln]
    assert devices and all(d and "None" not in d and "meta" not in d for d in devices)
    assert not [w for w in recwarn if "device" in str(w.message)]


def test_bench_prints_ratios(tmp_path, capsys):
    js = tmp_path / "b.json"
    assert main(["bench", "--sizes", "small", "--batches", "3", "--repeats", "2",
                 "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "xpdl[numpy]" in text and "x bound" in text
    res = json.loads(js.read_text())[0]
    row = res["rows"][0]
    assert row["runner"] == "xpdl[numpy]" and row["ratio_to_bound"] > 0
    assert len(row["times"]) == len(row["bound_times"]) == 2


def test_bench_tape_runner(capsys):
    assert main(["bench", "--sizes", "small", "--batches", "2", "--repeats", "1", "--vs", "",
                 "--tape"]) == 0
    assert "xpdl[numpy]/tape" in capsys.readouterr().out


def test_bench_ufuncs_runner(tmp_path, capsys):
    """``--ufuncs`` adds NumPy without the compiled kernels when Numba is installed; the
    JSON says which Numba ran."""
    pytest.importorskip("numba")
    js = tmp_path / "b.json"
    assert main(["bench", "--sizes", "small", "--batches", "2", "--repeats", "1", "--vs", "",
                 "--ufuncs", "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "xpdl[numpy]/ufuncs" in text and "compiled kernels: numba" in text
    res = json.loads(js.read_text())[0]
    assert res["numba"] and [r["runner"] for r in res["rows"]] == [
        "xpdl[numpy]", "xpdl[numpy]/nn", "xpdl[numpy]/ufuncs"]


def test_info_says_whether_compiled_kernels_run(monkeypatch, capsys):
    monkeypatch.setenv("XPDL_NUMBA", "0")
    assert main(["info"]) == 0
    assert "numba              not in use" in capsys.readouterr().out


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "loss.png"
    assert main(["train", "--epochs", "3", "--out", str(tmp_path / "m.safetensors"),
                 "--plot", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def _npy_dataset(tmp_path, n=3000, p=6, folder=False):
    g = np.random.default_rng(0)
    X = g.normal(size=(n, p))
    y = (X @ np.linspace(-1, 1, p) > 0).astype(np.float64)
    A = np.concatenate([X, y[:, None]], axis=1)
    if not folder:
        path = tmp_path / "big.npy"
        np.save(path, A)
        return str(path)
    d = tmp_path / "parts"
    d.mkdir()
    for i, part in enumerate(np.array_split(A, 3)):
        np.save(d / f"part{i}.npy", part)
    return str(d)


@pytest.mark.parametrize("folder", [False, True])
@pytest.mark.parametrize("model", ["mlp", "linear"])
def test_train_out_of_core_on_npy(tmp_path, capsys, folder, model):
    pytest.importorskip("dask")
    out = tmp_path / "m.safetensors"
    rc = main(["train", "--dataset", _npy_dataset(tmp_path, folder=folder), "--model", model,
               "--epochs", "3", "--chunk-rows", "400", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "out of core" in text and "Dask (threads)" in text
    import re

    score = float(re.search(r"test (accuracy|R\^2): ([-0-9.]+)", text).group(2))
    assert score > (0.8 if model == "mlp" else 0.3)
    import xpdl

    assert xpdl.load(str(out)).n_features_in_ == 6


def test_train_out_of_core_on_a_local_cluster(tmp_path, capsys):
    pytest.importorskip("distributed")
    out = tmp_path / "m.safetensors"
    rc = main(["train", "--dataset", _npy_dataset(tmp_path), "--model", "logistic",
               "--epochs", "2", "--chunk-rows", "500", "--workers", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "cluster tcp://" in text and out.exists()


def test_workers_need_an_out_of_core_dataset(capsys):
    assert main(["train", "--workers", "2"]) == 2
    assert "out of core" in capsys.readouterr().err


# -- a CLI that guides (#18.5/6) -----------------------------------------------------------
def test_version_and_help_show_defaults(capsys):
    import xpdl

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"xpdl {xpdl.__version__}"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--out", "--force", "--lr", "--epochs", "--backend"):
        assert flag in text
    assert "(default: model.safetensors)" in text and "(default: 60)" in text


def test_train_checks_arguments_before_training(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep me")
    assert main(["train", "--out", str(out)]) == 2
    assert "--out" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["train", "--out", str(tmp_path / "nope" / "m.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    for bad in (["--lr", "-1"], ["--hidden", "0"], ["--batch-size", "0"]):
        assert main(["train", *bad, "--out", str(tmp_path / "x.safetensors")]) == 2
        assert bad[0] in capsys.readouterr().err
    assert main(["train", "--model", "linear", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "classification" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
    assert main(["train", "--epochs", "1", "--out", str(out), "--force"]) == 0
    assert out.read_bytes()[:8] != b"keep me"


def test_info_into_a_closed_pipe_is_not_an_error():
    r = subprocess.run(f"{sys.executable} -m xpdl info | head -1", shell=True,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("xpdl ") and "Error" not in r.stderr


def test_bench_names_unknown_peers(capsys):
    assert main(["bench", "--vs", "torch,foo", "--sizes", "none"]) == 2
    assert "foo" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    ("", "the file is empty"),
    ("a,b,label\n", "only a header line"),
    ("a;b;label\n1;2;0\n3;4;1\n", "separated by ;"),
    ("a,b,label\n1,2,0\n3,,1\n", "line 3 has an empty cell (column 2)"),
    ("a,b\n1,2,3\n4,5,6\n", "line 2 has 3 cells, line 1 has 2"),  # was read as 2 columns
    ("1,2,0\n3,4\n5,6,1\n", "line 2 has 2 cells, line 1 has 3"),
])
def test_csv_problems_get_specific_messages(tmp_path, capsys, content, message):
    csv = tmp_path / "d.csv"
    csv.write_text(content)
    assert main(["train", "--dataset", str(csv), "--out", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert message in err and "--dataset" in err


@pytest.mark.parametrize("arrays,message", [
    ({"X": np.zeros((20, 3)), "y": np.zeros(19, int)}, "X has 20 rows but y has 19 labels"),
    ({"X": np.zeros((20, 3)), "y": np.zeros((20, 2), int)}, "y must hold one label per row"),
    ({"X": np.zeros((0, 3)), "y": np.zeros(0, int)}, "0 samples"),
])
def test_npz_problems_get_specific_messages(tmp_path, capsys, arrays, message):
    # they were an IndexError or a ZeroDivisionError with a traceback
    npz = tmp_path / "d.npz"
    np.savez(npz, **arrays)
    assert main(["train", "--dataset", str(npz), "--out", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert message in err and "--dataset" in err and "Traceback" not in err
