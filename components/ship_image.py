"""Ship one image to one host over SSH, unless the host has it: `python -m components.ship_image`.

Run by `pulumi up` on the operator's machine (a `command:local:Command` of components/images.py),
one host at a time. The image comes from an archive that `docker save` wrote (plain or compressed,
streamed as it is: `docker load` decompresses) or from this machine's own Docker engine
(`docker save` piped straight through). The host's architecture (`uname -m`) picks the source; the
host's engine is asked for the image's id first, and a host that has it gets no byte. After the
load the id is checked and the service's reference is tagged to it. Progress (bytes per host) is
printed while the bytes flow, and the last line says what was done:

    ship crate:6.4.3 → lab1: loaded sha256:1a2b… (612.0 MB in 14.1 s)
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stack.image_archive import MACHINE_ARCHITECTURES, ArchiveError, cached_archive

CHUNK = 1 << 20
PROGRESS_EVERY_S = 5.0
SSH_TIMEOUT_S = 120  # a question to the host's engine; the transfer itself is bounded by keepalives


class ShipError(RuntimeError):
    pass


@dataclass(frozen=True)
class Source:
    kind: str  # archive | local
    where: str  # the archive's path, or the local engine's reference
    image_id: str
    architecture: str
    size: int | None  # bytes to send, when known up front


def local_source(reference: str) -> Source:
    """An image this machine's Docker engine holds."""
    result = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}} {{.Architecture}} {{.Size}}", reference],
                            capture_output=True, text=True, timeout=SSH_TIMEOUT_S)
    if result.returncode != 0:
        raise ShipError(f"this machine's Docker engine has no image {reference} ({result.stderr.strip()[:200]})")
    image_id, architecture, size = result.stdout.split()
    return Source("local", reference, image_id, architecture, int(size))


def archive_source(path: str, cache: Path) -> Source:
    try:
        image = cached_archive(path, cache)
    except ArchiveError as e:
        raise ShipError(str(e)) from None
    return Source("archive", path, image.image_id, image.architecture, image.size)


class Host:
    def __init__(self, name: str, ssh: list[str]) -> None:
        self.name, self.ssh = name, ssh

    def run(self, command: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*self.ssh, "--", command], capture_output=True, text=True, **kwargs)

    def ask(self, command: str) -> str:
        try:
            result = self.run(command, timeout=SSH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ShipError(f"{self.name} did not answer within {SSH_TIMEOUT_S} s ({command.split()[0]})") from None
        if result.returncode != 0:
            raise ShipError(f"{self.name}: `{command}` failed ({result.returncode}): {result.stderr.strip()[-500:]}")
        return result.stdout.strip()


def image_id_on(host: Host, reference: str) -> str | None:
    answer = host.ask(f"docker image inspect -f '{{{{.Id}}}}' {shlex.quote(reference)} 2>/dev/null || true")
    return answer or None


def send(source: Source, host: Host, label: str) -> tuple[int, float]:
    """Stream the source into `docker load` on the host; (bytes, seconds)."""
    producer = None
    if source.kind == "archive":
        stream = open(source.where, "rb")  # noqa: SIM115 - closed below
    else:
        producer = subprocess.Popen(["docker", "save", source.where], stdout=subprocess.PIPE)
        stream = producer.stdout
    loader = subprocess.Popen([*host.ssh, "--", "docker load"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(loader.stderr.read()), daemon=True)
    reader.start()
    sent, started, reported = 0, time.monotonic(), time.monotonic()
    total = f" of {source.size / 1e6:.1f} MB" if source.size and source.kind == "archive" else ""
    try:
        while chunk := stream.read(CHUNK):
            try:
                loader.stdin.write(chunk)
            except BrokenPipeError:
                break
            sent += len(chunk)
            if time.monotonic() - reported >= PROGRESS_EVERY_S:
                reported = time.monotonic()
                rate = sent / (reported - started) / 1e6
                share = f" ({100 * sent // source.size} %)" if total else ""
                print(f"{label}: {sent / 1e6:.1f}{total} MB{share}, {rate:.1f} MB/s", flush=True)
        loader.stdin.close()
    finally:
        stream.close()
        if producer is not None and producer.wait() != 0:
            loader.kill()
            raise ShipError(f"`docker save {source.where}` on this machine failed")
    output = loader.stdout.read().decode(errors="replace")
    reader.join()
    if loader.wait() != 0:
        message = (errors[0] if errors else b"").decode(errors="replace").strip()[-500:]
        raise ShipError(f"{host.name}: the Docker engine refused the image ({message or output.strip()[-300:]})")
    return sent, time.monotonic() - started


def ship(sources: list[Source], reference: str, host: Host) -> str:
    label = f"ship {reference} → {host.name}"
    machine = host.ask("uname -m")
    architecture = MACHINE_ARCHITECTURES.get(machine, machine)
    matching = [s for s in sources if s.architecture == architecture]
    if not matching:
        offered = ", ".join(f"{s.where} ({s.architecture})" for s in sources)
        raise ShipError(f"{host.name} is {machine} ({architecture}); no image of {reference} for it among: {offered}")
    source = matching[0]
    present = image_id_on(host, reference)
    if present == source.image_id:
        return f"{label}: has {source.image_id[:19]}…, nothing shipped"
    if image_id_on(host, source.image_id) != source.image_id:
        sent, seconds = send(source, host, label)
        done = f"loaded {source.image_id[:19]}… ({sent / 1e6:.1f} MB in {seconds:.1f} s)"
    else:
        done = f"had {source.image_id[:19]}… under another name, nothing shipped"
    host.ask(f"docker tag {shlex.quote(source.image_id)} {shlex.quote(reference)}")
    if image_id_on(host, reference) != source.image_id:
        raise ShipError(f"{host.name}: after the load, {reference} is not {source.image_id}: the archive holds another image")
    return f"{label}: {done}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="the host's name, for messages")
    parser.add_argument("--ssh", required=True, help="JSON list: the ssh command that reaches the host")
    parser.add_argument("--reference", required=True, help="the name the service uses for the image")
    parser.add_argument("--archive", action="append", default=[], help="an image archive (docker save output)")
    parser.add_argument("--local", action="append", default=[], help="an image of this machine's Docker engine")
    parser.add_argument("--cache", required=True, help="file of archives already verified")
    args = parser.parse_args(argv)
    try:
        sources = [archive_source(p, Path(args.cache)) for p in args.archive] + [local_source(r) for r in args.local]
        print(ship(sources, args.reference, Host(args.host, json.loads(args.ssh))), flush=True)
    except ShipError as e:
        print(f"ship {args.reference} → {args.host}: error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
