"""load_config: where the Kubernetes credentials come from (pure; files under tmp_path only)."""
from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
import yaml

from buy_x402.errors import ConfigError
from buy_x402.kube import load_config
from buy_x402.settings import Settings


def _settings(tmp_path: Path, **kw) -> Settings:
    kw.setdefault("service_account_dir", str(tmp_path / "no-sa"))
    kw.setdefault("home", str(tmp_path / "home"))
    return Settings(**kw)


def _service_account(tmp_path: Path, namespace: str | None = "sa-ns") -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token\n")
    (sa / "ca.crt").write_text("CA")
    if namespace is not None:
        (sa / "namespace").write_text(namespace + "\n")
    return sa


def _kubeconfig(tmp_path: Path, user: dict, *, cluster: dict | None = None, namespace: str | None = "ctx-ns",
                name: str = "kubeconfig") -> Path:
    context = {"cluster": "c1", "user": "u1"}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "dev",
        "clusters": [{"name": "other", "cluster": {"server": "https://wrong.example"}},
                     {"name": "c1", "cluster": cluster or {"server": "https://10.0.0.1:6443/",
                                                          "certificate-authority": "ca.pem"}}],
        "users": [{"name": "u1", "user": user}],
        "contexts": [{"name": "dev", "context": context}],
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_in_cluster_service_account_wins(tmp_path):
    sa = _service_account(tmp_path)
    kubeconfig = _kubeconfig(tmp_path, {"token": "kc-token"})
    cfg = load_config(_settings(tmp_path, service_account_dir=str(sa), kubeconfig=str(kubeconfig),
                                kube_api_server="https://kubernetes.default.svc", agent_namespace="env-ns"))
    assert cfg.source == "in-cluster"
    assert cfg.server == "https://kubernetes.default.svc"
    assert cfg.token == "sa-token"
    assert cfg.verify == str(sa / "ca.crt")
    assert cfg.namespace == "sa-ns"  # the SA namespace file beats AGENT_NAMESPACE
    assert cfg.cert is None


def test_in_cluster_without_namespace_file_uses_env_then_default(tmp_path):
    sa = _service_account(tmp_path, namespace=None)
    assert load_config(_settings(tmp_path, service_account_dir=str(sa), agent_namespace="env-ns")).namespace == "env-ns"
    assert load_config(_settings(tmp_path, service_account_dir=str(sa))).namespace == "hermes-obol-agent"


def test_kubeconfig_with_token(tmp_path):
    path = _kubeconfig(tmp_path, {"token": "kc-token"})
    cfg = load_config(_settings(tmp_path, kubeconfig=str(path)))
    assert cfg.source == "kubeconfig"
    assert cfg.server == "https://10.0.0.1:6443"  # the current context's cluster, trailing slash dropped
    assert cfg.token == "kc-token"
    assert cfg.verify == str(tmp_path / "ca.pem")  # relative to the kubeconfig's directory
    assert cfg.cert is None
    assert cfg.namespace == "ctx-ns"


def test_default_kubeconfig_location_is_home(tmp_path):
    kube_dir = tmp_path / "home" / ".kube"
    kube_dir.mkdir(parents=True)
    _kubeconfig(kube_dir, {"token": "home-token"}, name="config")
    assert load_config(_settings(tmp_path)).token == "home-token"


def test_kubeconfig_list_uses_first_existing_file(tmp_path):
    path = _kubeconfig(tmp_path, {"token": "second"})
    cfg = load_config(_settings(tmp_path, kubeconfig=f"{tmp_path / 'missing'}:{path}"))
    assert cfg.token == "second"


def test_client_certificate_data_goes_to_private_files(tmp_path):
    user = {"client-certificate-data": base64.b64encode(b"CERT PEM").decode(),
            "client-key-data": base64.b64encode(b"KEY PEM").decode()}
    cluster = {"server": "https://k.example", "certificate-authority-data": base64.b64encode(b"CA PEM").decode()}
    cfg = load_config(_settings(tmp_path, kubeconfig=str(_kubeconfig(tmp_path, user, cluster=cluster))))
    assert cfg.token is None
    cert, key = cfg.cert
    assert Path(cert).read_bytes() == b"CERT PEM"
    assert Path(key).read_bytes() == b"KEY PEM"
    assert Path(cfg.verify).read_bytes() == b"CA PEM"
    for f in (cert, key, cfg.verify):
        assert stat.S_IMODE(Path(f).stat().st_mode) == 0o600


def test_client_certificate_files(tmp_path):
    user = {"client-certificate": "/abs/client.crt", "client-key": "keys/client.key"}
    cfg = load_config(_settings(tmp_path, kubeconfig=str(_kubeconfig(tmp_path, user))))
    assert cfg.cert == ("/abs/client.crt", str(tmp_path / "keys" / "client.key"))


def test_bad_inline_data_is_a_config_error(tmp_path):
    user = {"client-certificate-data": "%%%not base64", "client-key-data": "AAAA"}
    with pytest.raises(ConfigError, match="not valid base64"):
        load_config(_settings(tmp_path, kubeconfig=str(_kubeconfig(tmp_path, user))))


def test_insecure_skip_tls_verify(tmp_path):
    cluster = {"server": "https://k.example", "insecure-skip-tls-verify": True, "certificate-authority": "x"}
    cfg = load_config(_settings(tmp_path, kubeconfig=str(_kubeconfig(tmp_path, {"token": "t"}, cluster=cluster))))
    assert cfg.verify is False


def test_no_ca_means_system_trust(tmp_path):
    cluster = {"server": "https://k.example"}
    cfg = load_config(_settings(tmp_path, kubeconfig=str(_kubeconfig(tmp_path, {"token": "t"}, cluster=cluster))))
    assert cfg.verify is True


def test_token_file(tmp_path):
    (tmp_path / "tok").write_text("from-file\n")
    cfg = load_config(_settings(tmp_path, kubeconfig=str(_kubeconfig(tmp_path, {"tokenFile": "tok"}))))
    assert cfg.token == "from-file"


def test_missing_token_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(_settings(tmp_path, kubeconfig=str(_kubeconfig(tmp_path, {"tokenFile": "nope"}))))


@pytest.mark.parametrize("user", [
    {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws"}},
    {"auth-provider": {"name": "gcp"}},
])
def test_exec_plugin_and_auth_provider_are_refused(tmp_path, user):
    with pytest.raises(ConfigError) as exc:
        load_config(_settings(tmp_path, kubeconfig=str(_kubeconfig(tmp_path, user))))
    assert "exec-plugin kubeconfig users are not supported" in exc.value.message
    assert "token" in exc.value.hint and "in-cluster" in exc.value.hint


def test_nothing_found_names_both_places(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(_settings(tmp_path))
    assert str(tmp_path / "no-sa") in exc.value.message
    assert str(tmp_path / "home" / ".kube" / "config") in exc.value.message
    assert "KUBECONFIG" in exc.value.hint


def test_explicit_kubeconfig_missing_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no kubeconfig at .*/gone"):
        load_config(_settings(tmp_path, kubeconfig=str(tmp_path / "gone")))


@pytest.mark.parametrize("text, match", [
    ("just a string", "not a YAML mapping"),
    ("clusters: []\n", "no current-context"),
    ("current-context: ghost\ncontexts: []\n", "no context named 'ghost'"),
    (": : :\n- [", "cannot read kubeconfig"),
])
def test_broken_kubeconfigs(tmp_path, text, match):
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(_settings(tmp_path, kubeconfig=str(path)))


def test_namespace_precedence_for_kubeconfig(tmp_path):
    path = str(_kubeconfig(tmp_path, {"token": "t"}))
    assert load_config(_settings(tmp_path, kubeconfig=path, agent_namespace="env-ns")).namespace == "env-ns"
    assert load_config(_settings(tmp_path, kubeconfig=path)).namespace == "ctx-ns"
    bare = str(_kubeconfig(tmp_path, {"token": "t"}, namespace=None, name="bare"))
    assert load_config(_settings(tmp_path, kubeconfig=bare)).namespace == "hermes-obol-agent"
