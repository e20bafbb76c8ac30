"""Plugin discovery through real entry points: built-ins, the example third-party package, broken plugins."""

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


def test_builtins_register_through_the_entry_point():
    infos = {(i.kind, i.name): i for i in ap.plugins()}
    eager = infos[("adapter", "eager")]
    assert eager.distribution == "attn-plugins"
    assert eager.version == ap.__version__


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
