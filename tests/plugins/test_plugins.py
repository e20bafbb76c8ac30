"""Plugin discovery: built-ins registered directly, third parties through real entry points, broken plugins."""

from __future__ import annotations

import textwrap
import warnings

import numpy as np
import pytest
import torch

import attn_plugins as ap
from attn_plugins import AttentionRecord, PluginError
from attn_plugins.plugins import PluginRegistry, PluginWarning, get_component


def fake_distribution(root, dist: str, module: str, source: str) -> None:
    """Install a distribution the way pip would: a module plus a dist-info folder with entry_points.txt."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[attn_plugins]\n{module} = {module}\n")


def fresh_registry() -> PluginRegistry:
    return PluginRegistry().load_builtins().load_entry_points().collect()


def test_builtins_register_directly_without_install_metadata():
    infos = {(i.kind, i.name): i for i in ap.plugins()}
    eager = infos[("adapter", "eager")]
    assert eager.distribution == "attn-plugins" and eager.plugin == "attn_adapters.eager"
    assert eager.version == ap.__version__
    # No entry point at all (a source checkout never installed, or installed before a built-in was added):
    # every built-in is still there, because the core registers its DEFAULT_PLUGINS itself.
    bare = PluginRegistry().load_builtins().load_entry_points(eps=[]).collect()
    expected = {
        "adapter": {"eager", "huggingface", "torch_mha", "sentence_transformers"},
        "method": {"raw", "rollout", "flow", "grad_attention", "gae", "norm", "alti"},
        "view": {"head_view", "model_view", "neuron_view", "heatmap", "text", "side_by_side", "report"},
        "metric": {"comprehensiveness", "sufficiency", "deletion", "insertion", "token_f1", "spearman"},
    }
    for kind, names in expected.items():
        assert names <= set(bare.names(kind)), kind
    assert "max_attention" not in bare.names("method")
    # and `import attn_plugins` itself imports no built-in adapter: the registry does, when first used
    import subprocess
    import sys

    code = "import sys, attn_plugins; print(sorted(m for m in sys.modules if m.startswith('attn_adapters')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_environment_variable_chooses_which_installed_plugins_load(monkeypatch):
    from attn_plugins.plugins import ENV_VAR

    monkeypatch.setenv(ENV_VAR, "none")
    assert "max_attention" not in fresh_registry().names("method")
    assert "rollout" in fresh_registry().names("method"), "built-ins always load"
    monkeypatch.setenv(ENV_VAR, "attn-example-plugin")  # by distribution name
    assert "max_attention" in fresh_registry().names("method")
    monkeypatch.setenv(ENV_VAR, "example")  # by entry-point name
    assert "max_attention" in fresh_registry().names("method")
    monkeypatch.setenv(ENV_VAR, "example, not-installed")
    with pytest.warns(PluginWarning, match="'not-installed'.*no installed plugin has that name"):
        reg = fresh_registry()
    assert "max_attention" in reg.names("method")
    monkeypatch.setenv(ENV_VAR, "all")
    assert "max_attention" in fresh_registry().names("method")


def test_hooks_are_called_through_pluggy_tryfirst_and_tracing_work():
    order = []

    class Late:
        @ap.hookimpl(trylast=True)
        def attn_plugins_register_views(self, register):
            order.append("late")

    class Early:
        @ap.hookimpl(tryfirst=True)
        def attn_plugins_register_views(self, register):
            order.append("early")

    reg = PluginRegistry().load_builtins([])
    reg.pm.register(Late(), name="late")
    reg.pm.register(Early(), name="early")
    traced = []
    reg.pm.trace.root.setwriter(traced.append)
    reg.pm.enable_tracing()
    reg.collect()
    assert order == ["early", "late"]
    assert any("attn_plugins_register_views" in line for line in traced)


def test_a_raising_hook_is_isolated_inside_the_pluggy_call():
    class Broken:
        @ap.hookimpl(tryfirst=True)
        def attn_plugins_register_methods(self, register):
            register("half_registered", object())
            raise RuntimeError("boom")

    reg = PluginRegistry().load_builtins()
    with pytest.warns(PluginWarning, match="'broken'.*raised RuntimeError: boom"):
        reg.register(Broken(), name="broken", distribution="broken-dist")
    reg.collect()
    assert "half_registered" not in reg.names("method"), "what it registered before raising is dropped"
    assert "rollout" in reg.names("method")


def test_third_party_example_is_discovered_without_changes():
    infos = {(i.kind, i.name): i for i in ap.plugins()}
    assert infos[("method", "max_attention")].distribution == "attn-example-plugin"
    assert infos[("view", "token_table")].distribution == "attn-example-plugin"
    assert infos[("method", "max_attention")].version == "0.1.0"
    # the method works on a hand-made record: max over layers and heads of the first row
    a = torch.zeros(2, 2, 2, 2)
    a[0, 0] = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    a[0, 1] = torch.tensor([[0.2, 0.8], [0.5, 0.5]])
    a[1, 0] = torch.tensor([[0.6, 0.4], [0.3, 0.7]])
    a[1, 1] = torch.tensor([[0.5, 0.5], [0.1, 0.9]])
    rec = AttentionRecord(tokens=["x", "<b>y</b>"], attentions={"self": a})
    method = get_component("method", "max_attention")
    np.testing.assert_allclose(method(rec, position=0), [0.9, 0.8])
    np.testing.assert_allclose(method(rec, position="last"), [0.5, 0.9])
    np.testing.assert_allclose(method(rec, position=[1, 0]), [[0.5, 0.9], [0.9, 0.8]])
    with pytest.raises(ValueError, match="out of range"):
        method(rec, position=2)
    page = get_component("view", "token_table")(rec)
    assert "&lt;b&gt;y&lt;/b&gt;" in page.html and "<b>y" not in page.html


def test_plugin_that_fails_to_import_is_skipped_with_a_warning(tmp_path, monkeypatch):
    fake_distribution(
        tmp_path, "broken-import-dist", "broken_import_mod", "raise ImportError('missing dependency xyz')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning, match="broken-import-dist.*failed to import.*xyz"):
        reg = fresh_registry()
    assert "eager" in reg.names("adapter")
    assert "max_attention" in reg.names("method")
    assert [d for d, _ in reg.skipped] == ["broken-import-dist"]


def test_plugin_whose_hook_raises_is_isolated(tmp_path, monkeypatch):
    fake_distribution(
        tmp_path,
        "raising-hook-dist",
        "raising_hook_mod",
        """
        from attn_plugins import hookimpl

        @hookimpl
        def attn_plugins_register_methods(register):
            register("half_registered", object())
            raise RuntimeError("hook exploded")

        @hookimpl
        def attn_plugins_register_views(register):
            register("fine_view", object())
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning, match="raising-hook-dist.*hook exploded"):
        reg = fresh_registry()
    # nothing from the failing hook is kept; the plugin's other hook and every other plugin work
    assert "half_registered" not in reg.names("method")
    assert "fine_view" in reg.names("view")
    assert "max_attention" in reg.names("method")


def test_two_plugins_with_the_same_name_are_refused_naming_both(tmp_path, monkeypatch):
    fake_distribution(
        tmp_path,
        "clashing-dist",
        "clashing_mod",
        """
        from attn_plugins import hookimpl

        @hookimpl
        def attn_plugins_register_methods(register):
            register("max_attention", object())
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        fresh_registry()
    assert "attn-example-plugin" in str(info.value) and "clashing-dist" in str(info.value)


def test_unknown_component_lists_what_exists():
    with pytest.raises(PluginError, match="no method named 'nope'; registered methods: .*max_attention"):
        get_component("method", "nope")
    with pytest.raises(PluginError, match="unknown component kind"):
        get_component("gizmo", "x")


def test_in_process_plugin_registration():
    class LocalPlugin:
        @ap.hookimpl
        def attn_plugins_register_metrics(self, register):
            register("local_metric", lambda a, b: 0.0)

    reg = fresh_registry()
    reg.register(LocalPlugin(), name="local")
    assert "local_metric" in reg.names("metric")
    assert any(i.name == "local_metric" and i.distribution == "<local>" for i in reg.infos())


def test_invalid_hook_names_are_reported_not_fatal(tmp_path, monkeypatch):
    fake_distribution(
        tmp_path,
        "typo-dist",
        "typo_mod",
        """
        from attn_plugins import hookimpl

        @hookimpl
        def attn_plugins_register_method(register):  # typo: not a known hook
            register("x", object())
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = fresh_registry()
    assert any("typo-dist" in str(w.message) for w in caught)
    assert "eager" in reg.names("adapter")
