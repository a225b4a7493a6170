#!/usr/bin/env python3
"""Probe the container engine behind DOCKER_HOST through the docker SDK, and report.

Run after `source scripts/engine.sh && scripts/build-base-image.sh`:

    python3 scripts/check_engine.py            # human-readable report, exit 1 if a core check fails
    python3 scripts/check_engine.py --json     # the same, as JSON

Each check prints OK/FAIL/NOTE with the exact value or error it saw, so the report is
the record of what the docker SDK can rely on against this engine (podman's compat API).
Everything it creates carries the label tbench.check=<id> and is removed at the end.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound, NotFound

BASE = os.environ.get("TBENCH_BASE_IMAGE", "localhost/tbench-base:bookworm")
RUN_ID = uuid.uuid4().hex[:8]
LABELS = {"tbench.check": RUN_ID, "tbench.role": "probe"}
TAG = f"tbench/check-{RUN_ID}:abc123"

results: list[dict[str, Any]] = []
core_failed = False


def check(name: str, core: bool = False) -> Callable[[Callable[[], Any]], Any]:
    def deco(fn: Callable[[], Any]) -> Any:
        global core_failed
        t0 = time.perf_counter()
        try:
            detail = fn()
            status = "OK"
        except Exception as e:  # the point is to report any error verbatim
            detail = f"{type(e).__module__}.{type(e).__name__}: {e}"
            status = "FAIL"
            if os.environ.get("TBENCH_CHECK_DEBUG"):
                traceback.print_exc()
            if core:
                core_failed = True
        dt = time.perf_counter() - t0
        results.append({"check": name, "status": status, "seconds": round(dt, 3), "detail": detail})
        print(f"[{status:4}] {name} ({dt:.2f}s): {detail}", flush=True)
        return detail

    return deco


def text(result: Any) -> str:
    """ExecResult.output as text (typed bytes | iterator in the SDK's stubs)."""
    out = result.output
    return out.decode() if isinstance(out, bytes) else str(out)


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main() -> int:  # noqa: C901, PLR0915 - one linear probe; each check is a closure
    client = docker.from_env(timeout=120)
    api = client.api

    @check("ping + version", core=True)
    def _() -> Any:
        assert client.ping() is True
        v = client.version()
        comps = [c.get("Name") for c in v.get("Components", [])]
        return {
            "Version": v.get("Version"),
            "ApiVersion": v.get("ApiVersion"),
            "Components": comps,
            "sdk_api_version": api.api_version,
        }

    @check("info: cgroup driver/version, storage driver")
    def _() -> Any:
        i = client.info()
        return {
            k: i.get(k)
            for k in (
                "CgroupDriver",
                "CgroupVersion",
                "Driver",
                "MemoryLimit",
                "CpuCfsQuota",
                "SwapLimit",
                "NCPU",
                "MemTotal",
            )
        }

    @check("base image present + WorkingDir/Cmd", core=True)
    def _() -> Any:
        img = client.images.get(BASE)
        return {
            "tags": img.tags,
            "WorkingDir": img.attrs["Config"].get("WorkingDir"),
            "Cmd": img.attrs["Config"].get("Cmd"),
        }

    ctx = tempfile.mkdtemp(prefix="tbench-check-")
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(f"FROM {BASE}\nRUN echo hi > /hi\n")

    @check("images.build FROM base, tag tbench/...:abc123", core=True)
    def _() -> Any:
        img, logs = client.images.build(path=ctx, tag=TAG, labels=LABELS, rm=True, forcerm=True)
        chunks: list[Any] = list(logs)
        lines = [str(ch.get("stream", "")).strip() for ch in chunks if isinstance(ch, dict)]
        return {"id": str(img.id)[:19], "tags": img.tags, "log_tail": [x for x in lines if x][-2:]}

    @check("images.get(tag) by the short name used at build", core=True)
    def _() -> Any:
        img = client.images.get(TAG)
        return {
            "tags": img.tags,
            "WorkingDir": img.attrs["Config"].get("WorkingDir"),
            "Labels": img.attrs["Config"].get("Labels"),
        }

    @check("images.get('localhost/' + tag) (podman's compat API names it docker.io/..., not localhost/...)")
    def _() -> Any:
        try:
            return f"found: {client.images.get('localhost/' + TAG).tags}"
        except ImageNotFound:
            return f"ImageNotFound; found as {client.images.get('docker.io/' + TAG).tags}"

    @check("images.list(filters={'label': 'tbench.check=<id>'})")
    def _() -> Any:
        return [i.tags for i in client.images.list(filters={"label": f"tbench.check={RUN_ID}"})]

    @check("images.get('tbench/does-not-exist:x') raises ImageNotFound")
    def _() -> Any:
        try:
            client.images.get("tbench/does-not-exist:x")
        except ImageNotFound as e:
            return f"ImageNotFound: {e}"
        raise AssertionError("no error")

    bad = tempfile.mkdtemp(prefix="tbench-check-bad-")
    with open(os.path.join(bad, "Dockerfile"), "w") as f:
        f.write(f"FROM {BASE}\nRUN echo about-to-fail && exit 7\n")

    @check("images.build with failing RUN raises BuildError")
    def _() -> Any:
        try:
            client.images.build(path=bad, tag=f"tbench/check-bad-{RUN_ID}:x", labels=LABELS, rm=True, forcerm=True)
        except BuildError as e:
            logs = [c.get("stream", c.get("error", "")).strip() for c in e.build_log]
            return {"msg": e.msg, "log_tail": [x for x in logs if x][-3:]}
        raise AssertionError("build succeeded")

    unknown = tempfile.mkdtemp(prefix="tbench-check-unk-")
    with open(os.path.join(unknown, "Dockerfile"), "w") as f:
        f.write("FROM docker.io/library/python:3.13-slim\nRUN true\n")

    @check("images.build FROM an unpullable registry image (error + time)")
    def _() -> Any:
        try:
            client.images.build(path=unknown, tag=f"tbench/check-unk-{RUN_ID}:x", labels=LABELS, rm=True, forcerm=True)
        except (BuildError, APIError) as e:
            return f"{type(e).__name__}: {str(e)[:300]}"
        raise AssertionError("build succeeded")

    @check("no build containers left behind (podman ps -a --external) with rm=True, forcerm=True")
    def _() -> Any:
        import subprocess

        out = subprocess.run(
            ["podman", "ps", "-a", "--external", "--format", "{{.Names}}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
        leaked = [n for n in out if n.endswith("working-container") or "working-container-" in n]
        assert not leaked, f"leaked build containers: {leaked}"
        return "none"

    @check("images.pull from a registry (expected to fail offline)")
    def _() -> Any:
        try:
            client.images.pull("docker.io/library/alpine", tag="3.20")
        except (APIError, DockerException) as e:
            return f"{type(e).__name__}: {str(e)[:300]}"
        raise AssertionError("pull succeeded?!")

    holder: dict[str, Any] = {}

    @check("containers.run sleep infinity, labels, mem_limit=512m, nano_cpus=1e9, network none", core=True)
    def _() -> Any:
        c = client.containers.run(
            TAG,
            entrypoint=["sleep", "infinity"],
            detach=True,
            labels=LABELS,
            mem_limit="512m",
            nano_cpus=1_000_000_000,
            network_mode="none",
            name=f"tbench-check-{RUN_ID}",
        )
        holder["c"] = c
        c.reload()
        hc = c.attrs["HostConfig"]
        return {
            "status": c.status,
            "Memory": hc.get("Memory"),
            "MemorySwap": hc.get("MemorySwap"),
            "NanoCpus": hc.get("NanoCpus"),
            "CpuQuota": hc.get("CpuQuota"),
            "CpuPeriod": hc.get("CpuPeriod"),
            "NetworkMode": hc.get("NetworkMode"),
            "Labels": c.labels,
            "WorkingDir": c.attrs["Config"].get("WorkingDir"),
        }

    def c() -> Any:
        return holder["c"]

    @check("limits seen inside the container (cgroup v1 files)")
    def _() -> Any:
        cmd = (
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
            "/sys/fs/cgroup/cpu/cpu.cfs_period_us 2>&1; cat /proc/self/cgroup | head -3"
        )
        r = c().exec_run(["sh", "-c", cmd])
        return {"exit_code": r.exit_code, "output": text(r).split("\n")}

    @check("mem_limit enforced: allocate 800 MiB in a 512m container")
    def _() -> Any:
        hog = "b = bytearray(800 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('alive')"
        r = c().exec_run(["python3", "-c", hog])
        return {"exit_code": r.exit_code, "output": text(r)[-200:]}

    @check("container still running after in-container OOM kill")
    def _() -> Any:
        c().reload()
        return c().status

    @check("network_mode none: only loopback")
    def _() -> Any:
        r = c().exec_run(
            [
                "sh",
                "-c",
                "cat /proc/net/dev | tail -n +3 | cut -d: -f1; "
                "curl -sS -m 5 -o /dev/null https://pypi.org/simple/ 2>&1; echo rc=$?",
            ]
        )
        return {"exit_code": r.exit_code, "output": text(r).split()}

    @check("exec_run exit codes: true / false / exit 3", core=True)
    def _() -> Any:
        codes = [c().exec_run(cmd).exit_code for cmd in (["true"], ["false"], ["sh", "-c", "exit 3"])]
        assert codes == [0, 1, 3], codes
        return codes

    @check("exec_run of a missing binary")
    def _() -> Any:
        try:
            r = c().exec_run(["/no/such/binary"])
            return {"exit_code": r.exit_code, "output": text(r)[:200]}
        except APIError as e:
            return f"raises APIError: {e}"

    @check("exec_run workdir default, workdir=, environment=, user=, demux=True")
    def _() -> Any:
        r1 = c().exec_run(["pwd"])
        r2 = c().exec_run(
            ["sh", "-c", "pwd; echo $FOO; id -u; echo err >&2"],
            workdir="/tmp",
            environment={"FOO": "bar"},
            user="nobody",
            demux=True,
        )
        out, err = r2.output
        return {
            "default_pwd": text(r1).strip(),
            "out": out.decode().split(),
            "err": (err or b"").decode().strip(),
            "exit_code": r2.exit_code,
        }

    @check("exec_run(stream=True) yields chunks; exit code afterwards via exec_inspect")
    def _() -> Any:
        ex = api.exec_create(c().id, ["sh", "-c", "echo a; sleep 0.2; echo b; exit 5"])
        chunks = [x.decode() for x in api.exec_start(ex["Id"], stream=True)]
        info = api.exec_inspect(ex["Id"])
        return {"chunks": chunks, "ExitCode": info.get("ExitCode"), "Running": info.get("Running")}

    @check("exec with a timeout wrapper: `timeout 1 sleep 5` exit code")
    def _() -> Any:
        return c().exec_run(["timeout", "1", "sleep", "5"]).exit_code

    @check("put_archive to /app then get_archive of a file and a dir", core=True)
    def _() -> Any:
        ok = c().put_archive("/app", tar_of({"hello.txt": b"hello\n", "sub/x.py": b"print(1)\n"}))
        bits, stat = c().get_archive("/app/hello.txt")
        data = b"".join(bits)
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            names = tf.getnames()
            content = tf.extractfile("hello.txt").read()  # type: ignore[union-attr]
        bits2, stat2 = c().get_archive("/app")
        with tarfile.open(fileobj=io.BytesIO(b"".join(bits2))) as tf:
            names2 = sorted(tf.getnames())
        ls = text(c().exec_run(["ls", "-ln", "/app", "/app/sub"])).split("\n")
        return {
            "put_archive": ok,
            "file_stat": stat,
            "file_names": names,
            "content": content.decode(),
            "dir_stat": stat2,
            "dir_names": names2,
            "ls": ls,
        }

    @check("put_archive into a missing directory (docker: 404; podman creates it?)")
    def _() -> Any:
        try:
            ok = c().put_archive("/no/such/dir", tar_of({"a": b"a"}))
            return {"returned": ok, "ls": text(c().exec_run(["ls", "/no/such/dir"])).split()}
        except (APIError, NotFound) as e:
            return f"{type(e).__name__}: {e}"

    @check("get_archive of a missing path")
    def _() -> Any:
        try:
            _bits, stat = c().get_archive("/no/such/file")
            return {"returned": stat}
        except (APIError, NotFound) as e:
            return f"{type(e).__name__}: {e}"

    @check("create with a name already in use: error class + status code")
    def _() -> Any:
        try:
            client.containers.create(TAG, ["true"], name=c().name, labels=LABELS)
        except APIError as e:
            return f"{type(e).__name__} status_code={e.status_code}: {str(e.explanation)[:120]}"
        raise AssertionError("no error")

    @check("containers.list(all=True, filters={'label': 'tbench.check=<id>'})", core=True)
    def _() -> Any:
        by_kv = client.containers.list(all=True, filters={"label": f"tbench.check={RUN_ID}"})
        by_k = client.containers.list(all=True, filters={"label": "tbench.check"})
        by_two = client.containers.list(all=True, filters={"label": [f"tbench.check={RUN_ID}", "tbench.role=probe"]})
        none = client.containers.list(all=True, filters={"label": "tbench.check=nope"})
        assert [x.id for x in by_kv] == [c().id]
        return {"key=value": len(by_kv), "key only": len(by_k), "two labels (AND)": len(by_two), "no match": len(none)}

    @check("bind mount read-only (volumes=) of the host CA bundle")
    def _() -> Any:
        c2 = client.containers.run(
            TAG,
            ["sh", "-c", "head -c 27 /mnt/ca.crt; echo; touch /mnt/ca.crt 2>&1 | tail -1"],
            detach=True,
            labels=LABELS,
            network_mode="none",
            volumes={"/etc/ssl/certs/ca-certificates.crt": {"bind": "/mnt/ca.crt", "mode": "ro"}},
        )
        rc = c2.wait(timeout=60)
        out = c2.logs().decode().strip().split("\n")
        c2.remove(force=True)
        return {"wait": rc, "logs": out}

    @check("default network (no network_mode): HTTPS to PyPI from the container")
    def _() -> Any:
        c3 = client.containers.run(TAG, ["sleep", "infinity"], detach=True, labels=LABELS)
        try:
            c3.reload()
            nets = list(c3.attrs["NetworkSettings"].get("Networks", {}).keys())
            probe = (
                "curl -sS -m 20 -o /dev/null -w '%{http_code}' https://pypi.org/simple/six/; echo; "
                "getent hosts deb.debian.org | head -1"
            )
            r = c3.exec_run(["sh", "-c", probe])
            return {
                "NetworkMode": c3.attrs["HostConfig"].get("NetworkMode"),
                "Networks": nets,
                "exit_code": r.exit_code,
                "output": text(r).split("\n"),
            }
        finally:
            c3.remove(force=True)

    @check("network_mode='bridge' explicitly")
    def _() -> Any:
        c4 = client.containers.run(TAG, ["sleep", "infinity"], detach=True, labels=LABELS, network_mode="bridge")
        try:
            c4.reload()
            r = c4.exec_run(["sh", "-c", "curl -sS -m 20 -o /dev/null -w '%{http_code}' https://pypi.org/simple/six/"])
            return {
                "NetworkMode": c4.attrs["HostConfig"].get("NetworkMode"),
                "Networks": list(c4.attrs["NetworkSettings"].get("Networks", {}).keys()),
                "output": text(r),
            }
        finally:
            c4.remove(force=True)

    @check("storage_opt={'size': '10G'} (task.toml storage)")
    def _() -> Any:
        try:
            c5 = client.containers.create(TAG, ["true"], labels=LABELS, storage_opt={"size": "10G"})
        except (APIError, DockerException) as e:
            return f"{type(e).__name__}: {str(e)[:300]}"
        try:
            c5.start()
            return f"accepted; wait={c5.wait(timeout=30)}"
        except (APIError, DockerException) as e:
            return f"create ok, start {type(e).__name__}: {str(e)[:300]}"
        finally:
            c5.remove(force=True)

    @check("pids_limit=256, init=True, tty=True accepted")
    def _() -> Any:
        c6 = client.containers.run(
            TAG,
            ["sleep", "infinity"],
            detach=True,
            labels=LABELS,
            network_mode="none",
            pids_limit=256,
            init=True,
            tty=True,
        )
        try:
            c6.reload()
            r = c6.exec_run(["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max; ps -o pid,comm 1"])
            return {
                "PidsLimit": c6.attrs["HostConfig"].get("PidsLimit"),
                "Init": c6.attrs["HostConfig"].get("Init"),
                "out": text(r).split(),
            }
        finally:
            c6.remove(force=True)

    @check("wait(timeout) on a container that does not exit")
    def _() -> Any:
        t0 = time.perf_counter()
        try:
            c().wait(timeout=2)
            return "returned?!"
        except Exception as e:
            return f"{type(e).__module__}.{type(e).__name__} after {time.perf_counter() - t0:.1f}s"

    @check("stop(timeout=1) a `sleep infinity` entrypoint (PID 1 ignores SIGTERM)")
    def _() -> Any:
        t0 = time.perf_counter()
        c().stop(timeout=1)
        c().reload()
        return {
            "status": c().status,
            "ExitCode": c().attrs["State"].get("ExitCode"),
            "seconds": round(time.perf_counter() - t0, 2),
        }

    @check("exec_run on a stopped container: error class + status code")
    def _() -> Any:
        try:
            c().exec_run(["true"])
        except APIError as e:
            return f"{type(e).__name__} status_code={e.status_code}: {str(e.explanation)[:120]}"
        raise AssertionError("no error")

    @check("remove(force=True) then get -> NotFound", core=True)
    def _() -> Any:
        cid = c().id
        c().remove(force=True)
        try:
            client.containers.get(cid)
        except NotFound as e:
            return f"NotFound: {e}"
        raise AssertionError("still there")

    @check("5 cycles: create+start (sleep infinity) + exec true + remove(force)", core=True)
    def _() -> Any:
        times = []
        for _i in range(5):
            t0 = time.perf_counter()
            cc = client.containers.run(
                TAG,
                entrypoint=["sleep", "infinity"],
                detach=True,
                labels=LABELS,
                network_mode="none",
                mem_limit="512m",
                nano_cpus=1_000_000_000,
            )
            assert cc.exec_run(["true"]).exit_code == 0
            cc.remove(force=True)
            times.append(time.perf_counter() - t0)
        return {"mean_s": round(statistics.mean(times), 3), "each_s": [round(t, 3) for t in times]}

    @check("5 cycles on the default network (same, no network_mode)")
    def _() -> Any:
        times = []
        for _i in range(5):
            t0 = time.perf_counter()
            cc = client.containers.run(TAG, entrypoint=["sleep", "infinity"], detach=True, labels=LABELS)
            assert cc.exec_run(["true"]).exit_code == 0
            cc.remove(force=True)
            times.append(time.perf_counter() - t0)
        return {"mean_s": round(statistics.mean(times), 3), "each_s": [round(t, 3) for t in times]}

    # Clean up everything labelled with this run's id.
    @check("cleanup (containers + images labelled tbench.check=<id>)")
    def _() -> Any:
        n_c = 0
        for cc in client.containers.list(all=True, filters={"label": f"tbench.check={RUN_ID}"}):
            cc.remove(force=True)
            n_c += 1
        n_i = 0
        # all=True: the build's intermediate layer images carry the build labels too.
        for img in client.images.list(all=True, filters={"label": f"tbench.check={RUN_ID}"}):
            try:
                client.images.remove(str(img.id), force=True)
                n_i += 1
            except NotFound:
                pass  # already gone with a child image
        return {"containers_removed": n_c, "images_removed": n_i}

    if "--json" in sys.argv:
        print(json.dumps(results, indent=2, default=str))
    failed = [r["check"] for r in results if r["status"] == "FAIL"]
    print(
        f"{len(results) - len(failed)} checks ok, {len(failed)} failed"
        + (" (core failures: yes)" if core_failed else ""),
        flush=True,
    )
    return 1 if core_failed else 0


if __name__ == "__main__":
    sys.exit(main())
