"""The attn-plugins command line: real subprocesses for the entry point, in-process calls for the rest."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attn_plugins as ap
from attn_plugins.cli import main
from attn_plugins.zoo import tiny_bert, tiny_tokenizer

CLI = str(Path(sys.executable).with_name("attn-plugins"))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny_bert(num_labels=2).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=300)


def test_plugins_json_lists_builtins_and_third_party():
    proc = run("plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    comps = {(c["kind"], c["name"]): c for c in json.loads(proc.stdout)["components"]}
    assert comps[("adapter", "eager")]["distribution"] == "attn-plugins"
    assert comps[("method", "max_attention")]["distribution"] == "attn-example-plugin"
    assert comps[("view", "token_table")]["version"] == "0.1.0"


def test_plugins_table(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["kind", "name", "distribution", "version"]
    assert any(line.split()[:3] == ["method", "max_attention", "attn-example-plugin"] for line in out)


def test_capture_writes_the_same_record_as_the_api(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out.attn"
    assert main(["capture", "the movie was great", "-o", str(out), "--model", str(tiny_model_dir)]) == 0
    rec = ap.load(out)
    model = type(tiny_bert(num_labels=2)).from_pretrained(tiny_model_dir).eval()
    direct = ap.capture(model, tiny_tokenizer(), "the movie was great")
    assert rec.tokens == direct.tokens == ["[CLS]", "the", "movie", "was", "great", "[SEP]"]
    assert torch.allclose(rec.attentions["self"], direct.attentions["self"], atol=1e-6)
    assert rec.meta["model_name"] == str(tiny_model_dir)
    rec.validate()


def test_capture_options_layers_heads_fp16(tiny_model_dir, tmp_path):
    out = tmp_path / "sel.attn"
    code = main(
        [
            "capture",
            "hello world",
            "-o",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--layers",
            "1",
            "--heads",
            "0,2",
            "--fp16",
        ]
    )
    assert code == 0
    rec = ap.load(out)
    assert rec.attentions["self"].shape == (1, 2, 4, 4)
    assert rec.attentions["self"].dtype == torch.float16
    assert rec.layer_ids() == [1] and rec.head_ids() == [0, 2]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["capture", "text", "-o", "x.attn", "--model", "/no/such/model/dir"], "does not exist"),
        (["capture", "   ", "-o", "x.attn"], "empty"),
        (["capture", "text", "-o", "x.attn", "--model", "./missing-relative"], "does not exist"),
        (["capture", "text", "-o", "x.attn", "--layers", "1,a"], "comma-separated"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_2(args, fragment, tmp_path):
    proc = subprocess.run([CLI, *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


def test_text_too_long_is_refused_unless_truncated(tiny_model_dir, tmp_path, capsys):
    long_text = " ".join(["word"] * 100)  # the tiny model accepts 64 positions
    out = tmp_path / "long.attn"
    assert main(["capture", long_text, "-o", str(out), "--model", str(tiny_model_dir)]) == 2
    assert "at most 64" in capsys.readouterr().err
    assert not out.exists()
    assert main(["capture", long_text, "-o", str(out), "--model", str(tiny_model_dir), "--truncate"]) == 0
    rec = ap.load(out)
    assert len(rec.tokens) == 64 and rec.meta["truncated"] is True


def test_module_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "attn_plugins", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("attn-plugins ")


def test_demo_writes_an_offline_report_on_the_packaged_minilm(tmp_path, capsys):
    out = tmp_path / "demo.html"
    assert main(["demo", "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "all-MiniLM-L6-v2 (packaged)" in page
    assert "similarity to" in page  # the explained output is stated
    methods = ("cplrp_mask", "attnlrp", "gae")  # the methods worth reading: flow, raw, ... on request
    for method in (*methods, "Shapley values (reference)"):
        assert f">{method}<" in page, method
    # every method is ranked against exact Shapley values of the same target (10 maskable tokens: affordable)
    assert "Can this view be trusted?" in page
    assert "Reference: exact Shapley values of the explained output" in page and "1024 masked inputs" in page
    assert page.count("with Shapley values (reference): Spearman") == len(methods)
    assert re.search(rf"Read (\w+): of the {len(methods)} methods it agrees best", page) or "No method agrees" in page
    # nothing is fetched from the network: no external script, stylesheet or image
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "wrote" in capsys.readouterr().out


def test_explain_report_for_a_classifier(tiny_model_dir, tmp_path):
    out = tmp_path / "report.html"
    code = main(
        [
            "explain",
            "the movie was great",
            "-o",
            str(out),
            "--model",
            str(tiny_model_dir),
            "--methods",
            "raw,rollout,gae",
        ]
    )
    assert code == 0
    page = out.read_text(encoding="utf-8")
    assert "predicted" in page and ">gae<" in page


def test_explain_several_texts_and_unknown_method(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "two.html"
    args = ["explain", "good movie", "a very bad film", "-o", str(out), "--model", str(tiny_model_dir)]
    assert main([*args, "--methods", "rollout"]) == 0
    assert out.read_text(encoding="utf-8").count("Example ") >= 2
    assert main([*args, "--methods", "rollout,nope"]) == 2
    assert "unknown method(s) nope" in capsys.readouterr().err


def test_view_a_saved_record_uses_the_methods_it_allows(tiny_model_dir, tmp_path, capsys):
    rec_path, page_path = tmp_path / "x.attn", tmp_path / "x.html"
    assert main(["capture", "the plot was fun", "-o", str(rec_path), "--model", str(tiny_model_dir)]) == 0
    assert main(["view", str(rec_path), "-o", str(page_path), "--position", "mean"]) == 0
    captured = capsys.readouterr()
    assert "methods raw, rollout" in captured.out
    assert "skipped norm" in captured.err  # the record has no value norms; the reason is printed
    assert ">rollout<" in page_path.read_text(encoding="utf-8")
    assert main(["view", str(rec_path), "-o", str(page_path), "--methods", "norm"]) == 2
    assert "value_norms" in capsys.readouterr().err


def test_compare_prints_agreement_as_table_and_json(tiny_model_dir, capsys):
    args = ["compare", "the movie was great fun", "--model", str(tiny_model_dir), "--methods", "raw,rollout"]
    assert main([*args, "--max-evals", "40", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    text = json.dumps(result)
    assert "rollout" in text and "spearman" in text
    assert main([*args, "--max-evals", "40"]) == 0
    table = capsys.readouterr().out
    assert "spearman" in table and "rollout" in table.split("spearman", 1)[1]
    assert main([*args, "--target", "0", "--reference", "x"]) == 2


def test_view_exports_a_static_heatmap(tiny_model_dir, tmp_path, capsys):
    rec_path = tmp_path / "x.attn"
    assert main(["capture", "the plot was fun", "-o", str(rec_path), "--model", str(tiny_model_dir)]) == 0
    png, svg = tmp_path / "h.png", tmp_path / "h.svg"
    assert main(["view", str(rec_path), "--image", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "attn-view.html").exists()
    assert main(["view", str(rec_path), "--image", str(svg), "--layers", "0", "--heads", "2"]) == 0
    assert "<svg" in svg.read_text(encoding="utf-8")
    assert main(["view", str(rec_path), "--image", str(png), "--layers", "7"]) == 2
    assert "layer 7 out of range: there are 2 layers (0..1" in capsys.readouterr().err


def test_explain_corpus_run_resumes_on_the_packaged_minilm(tmp_path, capsys):
    texts = tmp_path / "texts.jsonl"
    lines = [{"id": f"t{i}", "text": t} for i, t in enumerate(["A cat sat.", "Dogs bark loudly.", "Rain today."])]
    texts.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "results"
    args = ["explain", "--input", str(texts), "--out", str(out), "--methods", "rollout", "--reference", "A pet."]
    assert main([*args, "--batch-size", "2"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert (first["total"], first["explained"], first["skipped"]) == (3, 3, 0)
    results = ap.corpus.load_results(out)
    assert [r["id"] for r in results] == ["t0", "t1", "t2"]
    # a second run finds everything done and redoes nothing
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["explained"], second["skipped"]) == (0, 3)
    assert sum(p.read_text().count("\n") for p in (out / "shards").iterdir()) == 3
    assert main(["explain", "--input", str(texts), "--methods", "rollout"]) == 2
    assert "--out" in capsys.readouterr().err


def test_bench_dispatches_to_the_packaged_benchmark(capsys, monkeypatch):
    import attn_plugins.bench.capture as bench_capture

    seen = {}

    def fake_run(quick: bool, seed: int) -> dict:
        seen.update(quick=quick, seed=seed)
        return {"benchmark": "capture", "ratio": 1.5}

    monkeypatch.setattr(bench_capture, "run", fake_run)
    assert main(["bench", "capture", "--quick", "--json", "--seed", "3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"benchmark": "capture", "ratio": 1.5}
    assert seen == {"quick": True, "seed": 3}


def test_a_text_far_too_long_is_cut_first_without_the_tokenizers_warning(tmp_path, capfd):
    """4,000 words with --truncate: one page of the model's 64 positions, and transformers warns of nothing."""
    model_dir = tmp_path / "bert-64"
    tiny_bert(num_labels=2).save_pretrained(model_dir)
    tok = tiny_tokenizer()
    tok.model_max_length = 64  # as a real checkpoint states its limit (MiniLM: 512); transformers warns past it
    tok.save_pretrained(model_dir)
    capfd.readouterr()
    text = " ".join(["the movie was great and the plot was fun"] * 450)
    page = tmp_path / "long.html"
    argv = ["explain", text, "--truncate", "--model", str(model_dir), "--methods", "raw", "--shap-evals", "8"]
    assert main([*argv, "-o", str(page)]) == 0
    err = capfd.readouterr().err
    assert "sequence length is longer" not in err, err
    html = page.read_text(encoding="utf-8")
    assert '"shape":[2,4,64,64]' in html  # the views hold the 64 tokens read, nothing of the rest
