"""Images shipped to the hosts (`imageSource: local` or archives): a ship command per host, run
again whenever the image the service names is another one."""

from tests.unit.conftest import hosts, local_id

LOCAL = {"hosts": hosts(2),
         "cratedb": {"image": "crate", "version": "6.4.3", "imageSource": "local"},
         "grafana": {"image": "grafana/grafana", "version": "13.0.1", "imageSource": "local"}}


def grafana_image(declared) -> str:
    service, = (d for d in declared.values() if d.typ == "docker:index/service:Service" and d.inputs["name"] == "grafana")
    return service.inputs["taskSpec"]["containerSpec"]["image"]


def test_an_image_rebuilt_under_the_same_tag_is_shipped_again(deploy, monkeypatch):
    """The ship command names the tag only; the service names the id. Without the id among the
    command's triggers, a rebuilt image never reached the hosts and Swarm rolled the service back
    ("No such image"), while `pulumi up` reported success (real engine, lab stack, 2026-12-06)."""
    declared, _ = deploy(LOCAL)
    first = local_id("grafana/grafana:13.0.1")
    assert grafana_image(declared) == first
    assert [declared[f"grafana-ship-node{i}"].inputs["triggers"] for i in (1, 2)] == [[first], [first]]

    from components import images
    rebuilt = "sha256:" + "1" * 64
    monkeypatch.setattr(images, "local_image_id", lambda reference, where: rebuilt)
    declared, _ = deploy(LOCAL)
    assert grafana_image(declared) == rebuilt
    assert [declared[f"grafana-ship-node{i}"].inputs["triggers"] for i in (1, 2)] == [[rebuilt], [rebuilt]]


def test_images_the_hosts_pull_are_not_shipped(deploy):
    declared, _ = deploy({"hosts": hosts(2)})
    assert not [name for name in declared if "-ship-" in name and not name.startswith("ingest-")]
