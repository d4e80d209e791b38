"""Pulumi components and the helpers they share.

One ComponentResource per file: hosts.py, swarm.py, cratedb.py, ingest.py, grafana.py, agents.py,
lab.py. The others are helpers, not components: remote.py (running a script over SSH),
docker_access.py (how the Docker provider reaches the swarm), swarm_configs.py (Swarm configs,
secrets and service defaults), images.py, ship_image.py, ingest_wheels.py (getting images to the
hosts) and grafana_dashboards/ (what Grafana shows, as code). Components import `stack`, never the
reverse.
"""
