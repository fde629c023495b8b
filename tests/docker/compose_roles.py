#!/usr/bin/env python3
"""The pst containers of a resolved compose file, as a test starts them.

Prints one line per container, NAME<TAB>ROLE; with --env NAME, that
container's environment (the final stage's ENV of the Dockerfile, then the
service's environment), a VAR=VALUE line each; with --argv NAME, the
arguments after the image's ENTRYPOINT (pst), a line each. A service with
deploy.replicas N gives NAME-1..NAME-N, as compose names its containers.
  tests/docker/compose_roles.py RESOLVED_COMPOSE.yml DOCKERFILE [--env|--argv NAME]
"""
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


def containers(compose, dockerfile):
    """(name, role, env, argv) of every pst container."""
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
        deploy = svc.get("deploy") or {}
        replicas = int(deploy.get("replicas", 1))
        names = [name] if "replicas" not in deploy else [f"{name}-{i}" for i in range(1, replicas + 1)]
        for n in names:
            yield n, role, env, cmd


def main():
    compose, dockerfile = sys.argv[1], sys.argv[2]
    mode, wanted = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else (None, None)
    found = False
    for name, role, env, argv in containers(compose, dockerfile):
        if mode is None:
            print(name, role, sep="\t")
        elif name == wanted:
            found = True
            lines = [f"{k}={v}" for k, v in env.items()] if mode == "--env" else argv
            print("\n".join(lines))
    if mode is not None and not found:
        sys.exit(f"compose_roles: no pst container {wanted}")


if __name__ == "__main__":
    main()
