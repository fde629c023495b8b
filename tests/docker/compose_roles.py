#!/usr/bin/env python3
"""The pst containers of a resolved compose file, as a test starts them.

Prints one line per container: NAME ROLE ENV ARGV, where ENV is the
container's environment (the final stage's ENV of the Dockerfile, then the
service's environment) and ARGV the arguments after the image's ENTRYPOINT
(pst), each a JSON value. A service with deploy.replicas N gives
NAME-1..NAME-N, as compose names its containers.
  tests/docker/compose_roles.py RESOLVED_COMPOSE.yml DOCKERFILE
"""
import json
import shlex
import sys

import yaml


def image_env(dockerfile):
    env, final = {}, {}
    text = open(dockerfile).read().replace("\\\n", " ")
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            final = {}
        elif word.upper() == "ENV":
            for item in shlex.split(rest):
                k, _, v = item.partition("=")
                final[k] = v
    env.update(final)
    return env


def main():
    compose, dockerfile = sys.argv[1], sys.argv[2]
    doc = yaml.safe_load(open(compose))
    base = image_env(dockerfile)
    for name, svc in doc["services"].items():
        cmd = svc.get("command") or []
        if isinstance(cmd, str):
            cmd = shlex.split(cmd)
        if "--role" not in cmd:
            continue
        env = dict(base)
        service_env = svc.get("environment") or {}
        if isinstance(service_env, list):
            service_env = dict(e.split("=", 1) for e in service_env)
        env.update({k: str(v) for k, v in service_env.items()})
        role = cmd[cmd.index("--role") + 1]
        replicas = int((svc.get("deploy") or {}).get("replicas", 1))
        names = [name] if "deploy" not in svc else [f"{name}-{i}" for i in range(1, replicas + 1)]
        for n in names:
            print(n, role, json.dumps(env, separators=(",", ":")), json.dumps(cmd, separators=(",", ":")), sep="\t")


if __name__ == "__main__":
    main()
