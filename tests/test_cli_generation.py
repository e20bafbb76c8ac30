"""``attn-plugins explain`` of a language model: each generated token (--max-new-tokens), a given continuation
(--target TEXT), contrasts (--contrast, --contrast-token), in a report and in a corpus run; misuse is one line."""

from __future__ import annotations

import html
import json
import warnings
from pathlib import Path

import pytest
from test_cli_errors import usage_error

from attn_plugins.cli import main
from attn_plugins.corpus.source import load_pretrained
from attn_plugins.explain.targets import resolve
from attn_plugins.zoo import tiny_model, tiny_tokenizer, tiny_vocab

TEXT = "the movie was good"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A tiny random Llama and the tiny GPT-style tokenizer saved as a local model directory."""
    path = tmp_path_factory.mktemp("tiny-llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny_model("llama", vocab_size=len(tiny_vocab("gpt"))).save_pretrained(path)
        tiny_tokenizer("gpt").save_pretrained(path)
    return path


def loaded_spec(model_dir: Path, **options):
    """What the library explains for TEXT on the saved model, loaded as the command line loads it."""
    model, tok, _ = load_pretrained(str(model_dir))
    return resolve(model, tok, TEXT, **options).meta


def page(capsys, tmp_path: Path, *argv: str) -> str:
    out = tmp_path / "r.html"
    assert main(["explain", *argv, "-o", str(out), "--shap-evals", "0"]) == 0, capsys.readouterr().err
    return html.unescape(out.read_text(encoding="utf-8"))


def test_each_generated_token_rather_than_a_contrast_token(llama_dir, tmp_path, capsys):
    text = page(capsys, tmp_path, TEXT, "--model", str(llama_dir), "--max-new-tokens", "3", "--contrast-token", "bad")
    meta = loaded_spec(llama_dir, max_new_tokens=3, contrast_token="bad")
    assert len(meta["generated_tokens"]) == 3
    pairs = ", ".join(f"{t!r} rather than 'bad'" for t in meta["generated_tokens"])
    assert f"generated: {' '.join(meta['generated_tokens'])!r}" in text
    assert f"({pairs})" in text and "log p(token) − log p(contrast token)" in text


def test_generated_tokens_without_a_contrast(llama_dir, tmp_path, capsys):
    text = page(capsys, tmp_path, TEXT, "--model", str(llama_dir), "--max-new-tokens", "2")
    meta = loaded_spec(llama_dir, max_new_tokens=2)
    assert f"generated: {' '.join(meta['generated_tokens'])!r}" in text and "rather than" not in text


def test_a_given_continuation_rather_than_another(llama_dir, tmp_path, capsys):
    argv = [TEXT, "--model", str(llama_dir), "--target", "a bad film", "--contrast", "the good movie"]
    text = page(capsys, tmp_path, *argv)
    assert "given continuation: 'a bad film'" in text
    assert "('a' rather than 'the', 'bad' rather than 'good', 'film' rather than 'movie')" in text


def test_a_contrast_alone_generates_as_many_tokens(llama_dir, tmp_path, capsys):
    text = page(capsys, tmp_path, TEXT, "--model", str(llama_dir), "--contrast", "a bad film")
    meta = loaded_spec(llama_dir, max_new_tokens=3)
    pairs = ", ".join(f"{t!r} rather than {c!r}" for t, c in zip(meta["generated_tokens"], ["a", "bad", "film"]))
    assert f"generated: {' '.join(meta['generated_tokens'])!r}" in text and f"({pairs})" in text


def test_an_integer_target_is_still_a_class(classifier_dir, tmp_path, capsys):
    text = page(capsys, tmp_path, TEXT, "--model", str(classifier_dir), "--methods", "cplrp", "--target", "0")
    assert "generated" not in text and "continuation" not in text


def test_a_corpus_run_explains_each_generated_token_rather_than_a_contrast(llama_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": TEXT}) + "\n")
    out = tmp_path / "run"
    argv = ["explain", "--input", src, "--out", out, "--model", llama_dir, "--max-new-tokens", "2"]
    assert main([str(a) for a in [*argv, "--contrast-token", "bad"]]) == 0, capsys.readouterr().err
    (shard,) = (out / "shards").glob("*.jsonl")
    (row,) = [json.loads(line) for line in shard.read_text().splitlines()]
    tokens = loaded_spec(llama_dir, max_new_tokens=2)["generated_tokens"]
    assert row["task"] == "generation" and row["output_names"] == [f"{t} (vs bad)" for t in tokens]
    assert len(row["scores"][0]) == 2
    run = json.loads((out / "manifest.json").read_text())["run"]["options"]
    assert run["max_new_tokens"] == 2 and run["contrast_token"] == "bad"


# ---------------------------------------------------------------------------- misuse: one line, exit 2
@pytest.mark.parametrize("n", ["0", "-2"])
def test_max_new_tokens_must_be_positive(llama_dir, tmp_path, capsys, n):
    argv = ["explain", TEXT, "--model", llama_dir, "--max-new-tokens", n, "-o", tmp_path / "r.html"]
    usage_error(capsys, argv, "--max-new-tokens", "positive", n)
    assert not (tmp_path / "r.html").exists()


def test_max_new_tokens_must_be_positive_in_a_corpus_run(llama_dir, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": TEXT}) + "\n")
    argv = ["explain", "--input", src, "--out", tmp_path / "run", "--model", llama_dir, "--max-new-tokens", "0"]
    usage_error(capsys, argv, "--max-new-tokens", "positive")
    assert not (tmp_path / "run").exists()


def test_a_contrast_of_another_length(llama_dir, tmp_path, capsys):
    argv = ["explain", TEXT, "--model", llama_dir, "--max-new-tokens", "2", "--contrast", "a bad film"]
    usage_error(capsys, [*argv, "-o", tmp_path / "r.html"], "'a bad film' is 3 tokens", "is 2")
    assert not (tmp_path / "r.html").exists()


def test_a_contrast_token_of_several_tokens(llama_dir, tmp_path, capsys):
    argv = ["explain", TEXT, "--model", llama_dir, "--contrast-token", "bad film", "-o", tmp_path / "r.html"]
    usage_error(capsys, argv, "'bad film' is 2 tokens")


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        (["--contrast", "a bad film"], "generates none"),
        (["--contrast-token", "bad"], "has none"),
        (["--target", "a bad film"], "generates none"),
    ],
)
def test_a_contrast_or_continuation_on_a_model_that_does_not_generate(
    classifier_dir, tmp_path, capsys, option, fragment
):
    argv = ["explain", TEXT, "--model", classifier_dir, "--methods", "cplrp", *option, "-o", tmp_path / "r.html"]
    usage_error(capsys, argv, "classification", fragment)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        (["--contrast", "a bad film", "--contrast-token", "bad"], ["--contrast", "--contrast-token", "not both"]),
        (["--target", "a bad film", "--max-new-tokens", "2"], ["--target", "--max-new-tokens", "continuation"]),
        (["--contrast", " "], ["--contrast is empty"]),
        (["--contrast-token", ""], ["--contrast-token is empty"]),
    ],
)
def test_options_that_contradict_each_other(llama_dir, tmp_path, capsys, options, needles):
    usage_error(capsys, ["explain", TEXT, "--model", llama_dir, *options, "-o", tmp_path / "r.html"], *needles)


def test_the_readme_command_lines_run(llama_dir, tmp_path, capsys, monkeypatch):
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    lines = [line for b in blocks for line in b.splitlines() if "--model path/to/lm" in line]
    assert len(lines) == 2, lines
    monkeypatch.chdir(tmp_path)
    for line in lines:
        argv = shlex.split(line.replace("path/to/lm", str(llama_dir)))
        assert argv[0] == "attn-plugins" and main(argv[1:]) == 0, capsys.readouterr().err
        out = tmp_path / argv[argv.index("-o") + 1]
        assert "rather than" in html.unescape(out.read_text(encoding="utf-8"))


def test_a_corpus_run_explains_token_0_when_asked(llama_dir, tmp_path, capsys):
    """``--target 0`` reaches the explainer (a truthiness filter once dropped it for the predicted token)."""
    model, tok, _ = load_pretrained(str(llama_dir))
    asked, predicted = resolve(model, tok, TEXT, target=0).label, resolve(model, tok, TEXT).label
    assert asked != predicted
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": TEXT}) + "\n")
    argv = ["explain", "--input", src, "--out", tmp_path / "run", "--model", llama_dir, "--target", "0"]
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    (shard,) = (tmp_path / "run" / "shards").glob("*.jsonl")
    (row,) = [json.loads(line) for line in shard.read_text().splitlines()]
    assert row["task"] == "next_token" and row["label"] == str(asked)


def test_an_encoder_decoder_explains_a_given_continuation_rather_than_a_token(tmp_path, capsys):
    path = tmp_path / "tiny-bart"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny_model("bart", vocab_size=len(tiny_vocab("seq2seq"))).save_pretrained(path)
        tiny_tokenizer("seq2seq").save_pretrained(path)
    text = page(capsys, tmp_path, TEXT, "--model", str(path), "--target", "a bad film", "--contrast-token", "good")
    # an encoder-decoder's labels end with its own </s>: explained too
    pairs = ", ".join(f"{t!r} rather than 'good'" for t in ["a", "bad", "film", "</s>"])
    assert "given continuation: 'a bad film </s>'" in text and f"({pairs})" in text


def test_a_continuation_of_digits_starts_with_a_space(llama_dir, tmp_path, capsys):
    # "4" alone is token id 4 (the next token's); " 4" is the continuation "4", explained by forced decoding
    text = page(capsys, tmp_path, TEXT, "--model", str(llama_dir), "--target", " 4", "--methods", "cplrp")
    assert "given continuation: '4'" in text
