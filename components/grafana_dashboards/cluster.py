"""The *Cluster* dashboard: CrateDB's own view of its health, from the sys tables."""

from grafana_foundation_sdk.builders import common, stat, table
from grafana_foundation_sdk.models.common import BigValueColorMode
from grafana_foundation_sdk.models.dashboard import ValueMap, ValueMappingResult

from components.grafana_dashboards.defaults import Sql, new_dashboard

UID = "mds-cluster"


def cluster_health():
    return (stat.Panel().title("Cluster health").description("GREEN: all shards and replicas; YELLOW: replicas missing; RED: data missing")
            .height(6).span(6)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).fields("/^health$/"))
            .color_mode(BigValueColorMode.BACKGROUND)
            .mappings([ValueMap({health: ValueMappingResult(color=color, index=i) for i, (health, color) in
                                 enumerate((("GREEN", "green"), ("YELLOW", "yellow"), ("RED", "red")))})])
            .with_target(Sql("SELECT health, severity FROM sys.cluster_health", fmt="table")))


def table_health():
    return (table.Panel().title("Health of tables and partitions").height(6).span(18)
            .with_target(Sql("""
                SELECT table_schema, table_name, partition_ident, health, missing_shards, underreplicated_shards
                FROM sys.health ORDER BY severity DESC, table_name""", fmt="table")))


def nodes():
    return (table.Panel().title("Nodes").description("Heap, disk and load of every CrateDB node")
            .height(8).span(24)
            .with_target(Sql("""
                SELECT name, hostname, heap['used'] * 100.0 / heap['max'] AS heap_used_percent,
                       fs['total']['used'] * 100.0 / fs['total']['size'] AS disk_used_percent,
                       fs['total']['available'] AS disk_available_bytes, load['1'] AS load_1m, load['5'] AS load_5m
                FROM sys.nodes ORDER BY name""", fmt="table")))


def shard_states():
    return (table.Panel().title("Shards by state").height(8).span(8)
            .with_target(Sql("""
                SELECT state, "primary", count(*) AS shards FROM sys.shards
                GROUP BY state, "primary" ORDER BY state""", fmt="table")))


def failed_checks():
    return (table.Panel().title("Failed cluster checks").description("sys.checks that do not pass; empty is good")
            .height(8).span(16)
            .with_target(Sql("""
                SELECT id, severity, description FROM sys.checks
                WHERE passed = false ORDER BY severity DESC""", fmt="table")))


def build():
    return (new_dashboard(UID, "Cluster", "CrateDB cluster health, nodes, shards and checks")
            .with_panel(cluster_health())
            .with_panel(table_health())
            .with_panel(nodes())
            .with_panel(shard_states())
            .with_panel(failed_checks()))
