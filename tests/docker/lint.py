#!/usr/bin/env python3
"""Checks pst's Dockerfiles and compose files without a Docker engine.

No Dockerfile linter is packaged for Debian 12 (hadolint is not), so this
one checks the rules that matter for these images, each named in its
message:
  from-tag        every FROM names a tag or digest, never :latest
  cuda-base       NVIDIA's CUDA base images are CUDA 12.x (they run on R535+
                  drivers; 13.x needs R580+), the same release in every stage
  copy-from       COPY --from names an earlier stage
  copy-source     COPY sources exist in the build context and .dockerignore
                  does not exclude them
  apt             apt-get install runs with -y and --no-install-recommends,
                  after apt-get update in the same RUN, and the same RUN
                  removes /var/lib/apt/lists
  no-add          ADD is not used (COPY says what it does)
  workdir         WORKDIR is absolute
  user            the final stage runs as a named, non-root USER
  healthcheck     the final stage has a HEALTHCHECK that runs pst health on
                  the port it EXPOSEs and sets as PST_METRICS_PORT
  exec-form       ENTRYPOINT, CMD and HEALTHCHECK CMD are JSON arrays
  runtime-libs    the runtime stage installs the packages
                  docker/runtime-packages.sh listed in the build stage
With --compose FILE (the output of `docker-compose config`), the stack:
  compose-env     every pst service has the same job settings (the job id
                  hashes them; a difference fails the rendezvous)
  compose-roles   one scheduler binding tcp://0.0.0.0:PORT; servers and
                  workers reach tcp://scheduler:PORT; cluster.servers equals
                  the server replicas, cluster.workers the worker replicas
  compose-volumes every pst service mounts the runs volume where
                  train.output lives; the key file is a secret
  compose-files   bind-mounted files and directories exist
  compose-restart servers and workers restart on failure (a lost server's
                  replacement re-forms the job, a worker takes its place
                  back); the scheduler does not (a new one cannot take over
                  a running job)
  compose-limits  every pst service has CPU and memory limits
Exit 1 with one line per problem; 0 when clean.
  tests/docker/lint.py [--context DIR] [--compose RESOLVED.yml] DOCKERFILE...
"""
import argparse
import fnmatch
import json
import os
import re
import shlex
import sys


def instructions(text):
    """(line number, INSTRUCTION, arguments) with continuations joined."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def is_json_array(text):
    try:
        v = json.loads(text)
    except ValueError:
        return False
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def ignored(path, patterns):
    path = path.rstrip("/")
    for p in patterns:
        p = p.rstrip("/")
        if fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p):
            return True
    return False


def lint_dockerfile(path, context):
    problems = []
    name = os.path.relpath(path, context)

    def bad(line, rule, msg):
        problems.append(f"{name}:{line}: [{rule}] {msg}")

    with open(path) as f:
        ins = instructions(f.read())
    patterns = []
    ignore_file = os.path.join(context, ".dockerignore")
    if os.path.exists(ignore_file):
        with open(ignore_file) as f:
            patterns = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    stages = []  # (name, [instructions])
    cuda_releases = set()
    for line, word, args in ins:
        if word == "FROM":
            parts = args.split()
            image = parts[0]
            m = re.match(r"(?:docker\.io/)?nvidia/cuda:(\d+)\.(\d+)\.(\d+)-", image)
            if m:
                cuda_releases.add(m.group(0))
                if m.group(1) != "12":
                    bad(line, "cuda-base", f"FROM {image}: CUDA {m.group(1)}.x; use a 12.x image (runs on R535+ drivers)")
                if len(cuda_releases) > 1:
                    bad(line, "cuda-base", f"FROM {image}: another CUDA release than the stage before")
            stage = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else ""
            base = image.split("/")[-1]
            if "@sha256:" not in image and (":" not in base or base.endswith(":latest")):
                bad(line, "from-tag", f"FROM {image}: name a tag (not latest) or a digest")
            stages.append((stage, []))
            continue
        if not stages:
            bad(line, "from-tag", f"{word} before any FROM")
            continue
        stages[-1][1].append((line, word, args))
    names = []
    for i, (stage, body) in enumerate(stages):
        final = i == len(stages) - 1
        user = None
        health = None
        exposed, env_port = set(), None
        for line, word, args in body:
            if word == "COPY":
                tokens = shlex.split(args)
                flags = [t for t in tokens if t.startswith("--")]
                paths = [t for t in tokens if not t.startswith("--")]
                src_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
                if src_stage is not None:
                    if src_stage not in names:
                        bad(line, "copy-from", f"COPY --from={src_stage}: no earlier stage of that name")
                else:
                    for src in paths[:-1]:
                        if src == ".":
                            continue
                        if not os.path.exists(os.path.join(context, src)):
                            bad(line, "copy-source", f"COPY {src}: not in the build context")
                        elif ignored(src, patterns):
                            bad(line, "copy-source", f"COPY {src}: excluded by .dockerignore")
            elif word == "ADD":
                bad(line, "no-add", "use COPY (ADD also fetches URLs and unpacks archives)")
            elif word == "WORKDIR" and not args.startswith("/"):
                bad(line, "workdir", f"WORKDIR {args}: use an absolute path")
            elif word == "RUN" and re.search(r"apt-get\s+(-\S+\s+)*install", args):
                install = re.search(r"apt-get\s+(-\S+\s+)*install", args).start()
                update = args.find("apt-get update")
                if update < 0 or update > install:
                    bad(line, "apt", "apt-get install without apt-get update before it in the same RUN")
                if not re.search(r"install[^&;|]*\s-y\b", args):
                    bad(line, "apt", "apt-get install without -y")
                if "--no-install-recommends" not in args:
                    bad(line, "apt", "apt-get install without --no-install-recommends")
                if "rm -rf /var/lib/apt/lists" not in args:
                    bad(line, "apt", "the RUN that installs does not remove /var/lib/apt/lists")
            elif word == "USER":
                user = (line, args.split(":")[0])
            elif word == "HEALTHCHECK":
                health = (line, args)
            elif word == "EXPOSE":
                exposed.update(p.split("/")[0] for p in args.split())
            elif word == "ENV":
                m = re.search(r"PST_METRICS_PORT=(\d+)", args)
                if m:
                    env_port = m.group(1)
            if word in ("ENTRYPOINT", "CMD") and not is_json_array(args):
                bad(line, "exec-form", f"{word} {args}: use the JSON form so signals reach pst")
        if stage:
            names.append(stage)
        if not final:
            continue
        last = body[-1][0] if body else 0
        if user is None:
            bad(last, "user", "the final stage has no USER: it would run as root")
        elif user[1] in ("root", "0"):
            bad(user[0], "user", f"USER {user[1]}: run as a non-root user")
        if health is None:
            bad(last, "healthcheck", "the final stage has no HEALTHCHECK")
        else:
            cmd = health[1][health[1].find("CMD") + 3:].strip() if "CMD" in health[1] else ""
            if not is_json_array(cmd):
                bad(health[0], "exec-form", "HEALTHCHECK CMD: use the JSON form")
            else:
                argv = json.loads(cmd)
                port = argv[-1].rsplit(":", 1)[-1] if argv else ""
                if argv[:2] != ["pst", "health"]:
                    bad(health[0], "healthcheck", "HEALTHCHECK should run pst health (ready after the rendezvous)")
                if port not in exposed or port != env_port:
                    bad(health[0], "healthcheck",
                        f"checks port {port}, but EXPOSE says {sorted(exposed)} and PST_METRICS_PORT {env_port}")
        text = " ".join(a for _, w, a in body if w == "RUN")
        if "runtime-packages.txt" not in text:
            bad(last, "runtime-libs", "the runtime stage does not install runtime-packages.txt")
    build_runs = " ".join(a for stage in stages[:-1] for _, w, a in stage[1] if w == "RUN")
    if "docker/runtime-packages.sh" not in build_runs:
        bad(1, "runtime-libs", "no build stage runs docker/runtime-packages.sh on the binary")
    return problems


# Settings that may differ from process to process (core/config.h, job_id):
# every other PST_ variable is a job setting that all processes must share.
PER_PROCESS = {"PST_TRAIN_DEVICE", "PST_TRAIN_THREADS", "PST_TRAIN_LOG_LEVEL", "PST_CLUSTER_HOST",
               "PST_CLUSTER_INTERFACE", "PST_CLUSTER_PORT_RANGE", "PST_SECURITY_KEY_FILE"}


def job_settings_of(env):
    """The PST_ variables of an environment that the job id hashes."""
    return {k: v for k, v in env.items() if k.startswith("PST_") and k not in PER_PROCESS
            and not k.startswith("PST_METRICS_")}


def lint_compose(path, context):
    import yaml  # python3-yaml, a dependency of docker-compose

    problems = []
    with open(path) as f:
        doc = yaml.safe_load(f)

    def bad(rule, msg):
        problems.append(f"{os.path.basename(path)}: [{rule}] {msg}")

    services = doc.get("services", {})
    pst = {}
    for name, svc in services.items():
        cmd = svc.get("command") or []
        if isinstance(cmd, str):
            cmd = shlex.split(cmd)
        if "--role" in cmd:
            pst[name] = (svc, cmd)
    if not pst:
        bad("compose-roles", "no service runs pst train --role")
        return problems

    def env_of(svc):
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) for e in env)
        return {k: str(v) for k, v in env.items()}

    def job_settings(svc, cmd):
        shared = job_settings_of(env_of(svc))
        config = cmd[cmd.index("--config") + 1] if "--config" in cmd else None
        return shared, config

    ref_name = sorted(pst)[0]
    ref = job_settings(*pst[ref_name])
    for name, (svc, cmd) in sorted(pst.items()):
        got = job_settings(svc, cmd)
        if got != ref:
            diff = sorted(set(got[0].items()) ^ set(ref[0].items()))
            bad("compose-env", f"{name}'s job settings differ from {ref_name}'s: {diff or (got[1], ref[1])}")
    roles = {name: cmd[cmd.index("--role") + 1] for name, (svc, cmd) in pst.items()}
    endpoint = {name: cmd[cmd.index("--scheduler") + 1] if "--scheduler" in cmd else "" for name, (svc, cmd) in pst.items()}
    schedulers = [n for n, r in roles.items() if r == "scheduler"]
    if len(schedulers) != 1:
        bad("compose-roles", f"{len(schedulers)} scheduler services; one is needed")
        return problems
    sched = schedulers[0]
    m = re.fullmatch(r"tcp://0\.0\.0\.0:(\d+)", endpoint[sched])
    if not m:
        bad("compose-roles", f"{sched} binds {endpoint[sched]!r}; expected tcp://0.0.0.0:PORT")
    else:
        want = f"tcp://{services[sched].get('hostname', sched)}:{m.group(1)}"
        for n, r in roles.items():
            if r != "scheduler" and endpoint[n] != want:
                bad("compose-roles", f"{n} reaches the scheduler at {endpoint[n]!r}; expected {want}")
    env = env_of(pst[sched][0])
    servers = [n for n, r in roles.items() if r == "server"]
    for n in sorted(roles):
        if roles[n] == "scheduler":
            continue
        policy = str(services[n].get("restart", "no"))
        if not (policy.startswith("on-failure") or policy in ("always", "unless-stopped")):
            bad("compose-restart", f"{n} has restart: {policy}; a {roles[n]} needs on-failure to replace itself")
    for n in sorted(roles):
        limits = ((services[n].get("deploy") or {}).get("resources") or {}).get("limits") or {}
        for what in ("cpus", "memory"):
            if not limits.get(what):
                bad("compose-limits", f"{n} has no {what} limit (deploy.resources.limits.{what})")
    if str(services[sched].get("restart", "no")) != "no":
        bad("compose-restart", f"{sched} has restart: {services[sched].get('restart')}; a scheduler must not restart")
    workers = [n for n, r in roles.items() if r == "worker"]
    replicas = sum(int((services[n].get("deploy") or {}).get("replicas", 1)) for n in workers)
    server_replicas = sum(int((services[n].get("deploy") or {}).get("replicas", 1)) for n in servers)
    if env.get("PST_CLUSTER_SERVERS") != str(server_replicas):
        bad("compose-roles", f"PST_CLUSTER_SERVERS={env.get('PST_CLUSTER_SERVERS')} but {server_replicas} server replicas")
    if env.get("PST_CLUSTER_WORKERS") != str(replicas):
        bad("compose-roles", f"PST_CLUSTER_WORKERS={env.get('PST_CLUSTER_WORKERS')} but {replicas} worker replicas")
    output = env.get("PST_TRAIN_OUTPUT", "")
    for n, (svc, cmd) in sorted(pst.items()):
        mounts = []
        for v in svc.get("volumes") or []:
            if isinstance(v, dict):
                mounts.append((v.get("source"), v.get("target"), v.get("type")))
            else:
                parts = v.split(":")
                mounts.append((parts[0], parts[1] if len(parts) > 1 else parts[0], "volume"))
        if not any(t and output.startswith(t.rstrip("/") + "/") and ty == "volume" for _, t, ty in mounts):
            bad("compose-volumes", f"{n}: no named volume holds train.output {output!r}")
        if env_of(svc).get("PST_SECURITY_MODE", "secret") != "none":
            key = env_of(svc).get("PST_SECURITY_KEY_FILE", "")
            secrets = [s if isinstance(s, str) else s.get("source") for s in svc.get("secrets") or []]
            if not key.startswith("/run/secrets/") or key.rsplit("/", 1)[-1] not in secrets:
                bad("compose-volumes", f"{n}: security.key_file {key!r} is not one of its secrets {secrets}")
    for name, svc in services.items():
        for v in svc.get("volumes") or []:
            src, ty = (v.get("source"), v.get("type")) if isinstance(v, dict) else (v.split(":")[0], "")
            if (ty == "bind" or (src or "").startswith("/")) and not os.path.exists(src):
                bad("compose-files", f"{name}: bind-mounts {src}, which does not exist")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--context", default=".")
    ap.add_argument("--compose", action="append", default=[])
    ap.add_argument("dockerfiles", nargs="*")
    a = ap.parse_args()
    problems = []
    for d in a.dockerfiles:
        problems += lint_dockerfile(d, a.context)
    for c in a.compose:
        problems += lint_compose(c, a.context)
    for p in problems:
        print(p)
    if not problems:
        print(f"lint: {len(a.dockerfiles)} Dockerfiles, {len(a.compose)} compose files: clean")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
