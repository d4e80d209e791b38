"""Every service's image on the hosts that run it, before the Swarm labels a host for its services.

A Swarm global service starts a task on a node as soon as the node carries its label; a task whose
image the node lacks is rejected ("No such image") and retried until the image arrives. So the
Swarm labels a host only after what this component puts on it (components/swarm.py): a host added
by `pulumi up` joins, receives its images, and only then gets its tasks. Seen on the real engine
when a fourth host joined before its images were shipped (docs/verified.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from components.docker_access import SshAccess
from components.hosts import Host
from components.images import ServiceImage, prebuilt_image
from components.ingest_image import ingest_image
from stack.model import CrateDbSettings, GrafanaSettings, IngestSettings

# Until these commands moved here they were children of the service components of these names and
# types: the aliases keep a deployed stack's commands as they are (without them each would be
# replaced, and a replaced `ingest-build-here` would remove the image its replacement just found).
FORMER_PARENTS = {"cratedb": "mds:cratedb:CrateDb", "grafana": "mds:grafana:Grafana", "ingest": "mds:ingest:Ingest"}


@dataclass(frozen=True, kw_only=True)
class ServiceImagesArgs:
    hosts: Sequence[Host]
    cratedb: CrateDbSettings
    grafana: GrafanaSettings
    ingest: IngestSettings
    ssh: SshAccess  # how this machine reaches the hosts, to ship images


class ServiceImages(pulumi.ComponentResource):
    cratedb: ServiceImage
    grafana: ServiceImage
    ingest: ServiceImage

    def __init__(self, name: str, args: ServiceImagesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mds:images:ServiceImages", name, None, opts)

        def for_service(service: str) -> tuple[list[Host], pulumi.ResourceOptions]:
            former = pulumi.Alias(parent=pulumi.create_urn(service, FORMER_PARENTS[service]))
            return ([h for h in args.hosts if service in h.spec.services],
                    pulumi.ResourceOptions(parent=self, aliases=[former]))

        def prebuilt(service: str, settings: CrateDbSettings | GrafanaSettings) -> ServiceImage:
            hosts, options = for_service(service)
            return prebuilt_image(service, service, source=settings.image_source,
                                  reference=f"{settings.image}:{settings.version}",
                                  registry_reference=settings.image_ref, hosts=hosts, ssh=args.ssh, opts=options)

        self.cratedb = prebuilt("cratedb", args.cratedb)
        self.grafana = prebuilt("grafana", args.grafana)
        hosts, options = for_service("ingest")
        self.ingest = ingest_image("ingest", args.ingest, hosts=hosts, ssh=args.ssh, opts=options)
        self.register_outputs({})

    def on_host(self, host_name: str) -> list[pulumi.Resource]:
        """What must have finished on a host before it is labelled for its services."""
        return [c for image in (self.cratedb, self.grafana, self.ingest) for c in image.on_host.get(host_name, ())]
