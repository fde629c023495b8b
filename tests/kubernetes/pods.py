#!/usr/bin/env python3
"""The pst pods of rendered Kubernetes manifests, as a test starts them.

Reads the output of `kubectl kustomize` (and of `kubectl create secret
--dry-run=client -o yaml`), expands each workload (StatefulSet, Job,
Deployment) into the pods Kubernetes would make, and resolves what a
container of each would see, the way the kubelet does:
  list                    NAME<TAB>ROLE<TAB>WORKLOAD, a line per pst pod
  env NAME                its environment, a VAR=VALUE line each: the image's
                          ENV (its Dockerfile's final stage), then envFrom,
                          then env (fieldRef status.podIP, metadata.name and
                          metadata.namespace; configMapKeyRef, secretKeyRef;
                          $(VAR) references); JOB_COMPLETION_INDEX in an
                          indexed Job
  argv NAME               the arguments after the image's ENTRYPOINT (pst)
  mounts NAME             MOUNTPATH<TAB>KIND<TAB>SOURCE<TAB>MODE per volume
                          mount (secret, pvc, emptyDir); an unknown Secret or
                          claim is an error
  secret NAME KEY         the decoded value of a rendered Secret's key
  probe NAME              PORT<TAB>PATH of its readiness probe's httpGet
  hosts                   the cluster DNS as /etc/hosts lines: each headless
                          Service's name for the pods it selects, and
                          POD.SERVICE for a StatefulSet's pods
Pod addresses come from --addresses FILE (NAME<TAB>ADDRESS lines).
  tests/kubernetes/pods.py --image pst:cpu=docker/Dockerfile [--addresses F] RENDERED.yaml... COMMAND [ARGS]
"""
import argparse
import base64
import os
import re
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docker"))
from compose_roles import image_env  # noqa: E402

NAMESPACE = "default"
WORKLOADS = ("StatefulSet", "Job", "Deployment")


def load(paths):
    docs = []
    for p in paths:
        with open(p) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return docs


def find(docs, kind, name):
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return d
    return None


def container(template):
    """The pst container of a pod template (the one whose args name a --role), or None."""
    for c in template["spec"].get("containers") or []:
        if "--role" in (c.get("args") or []):
            return c
    return None


class Pod:
    def __init__(self, name, workload, index, template):
        self.name, self.workload, self.index, self.template = name, workload, index, template
        self.spec = template["spec"]
        self.labels = (template.get("metadata") or {}).get("labels") or {}
        self.container = container(template)
        args = self.container.get("args") or []
        self.args = args
        self.role = args[args.index("--role") + 1]


def pods(docs):
    """Every pst pod of the workloads, named as Kubernetes names them (an
    indexed Job's pods NAME-INDEX, a one-pod Job's NAME)."""
    out = []
    for d in docs:
        if d.get("kind") not in WORKLOADS:
            continue
        spec, name = d["spec"], d["metadata"]["name"]
        template = spec["template"]
        if container(template) is None:
            continue
        if d["kind"] == "Job":
            indexed = spec.get("completionMode") == "Indexed"
            n = int(spec.get("completions", 1)) if indexed else int(spec.get("parallelism", 1))
            names = [f"{name}-{i}" for i in range(n)] if indexed or n > 1 else [name]
            out += [Pod(pn, d, i if indexed else None, template) for i, pn in enumerate(names)]
        else:
            n = int(spec.get("replicas", 1))
            out += [Pod(f"{name}-{i}", d, None, template) for i in range(n)]
    return out


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def secret_value(docs, name, key):
    s = find(docs, "Secret", name)
    if s is None:
        raise SystemExit(f"pods: no Secret {name} among the rendered objects")
    if key in (s.get("stringData") or {}):
        return s["stringData"][key]
    if key not in (s.get("data") or {}):
        raise SystemExit(f"pods: Secret {name} has no key {key}")
    return base64.b64decode(s["data"][key]).decode()


def expand(text, env):
    """$(VAR) as the kubelet expands it in env values and args; $$ escapes."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def environment(docs, pod, images, addresses):
    c = pod.container
    image = c.get("image", "")
    if image not in images:
        raise SystemExit(f"pods: {pod.name}: image {image} has no --image Dockerfile")
    env = image_env(images[image])
    for src in c.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            cm = find(docs, "ConfigMap", src["configMapRef"]["name"])
            if cm is None:
                raise SystemExit(f"pods: {pod.name}: no ConfigMap {src['configMapRef']['name']}")
            env.update({prefix + k: str(v) for k, v in (cm.get("data") or {}).items()})
        elif "secretRef" in src:
            s = find(docs, "Secret", src["secretRef"]["name"])
            for k in (s or {}).get("data") or {}:
                env[prefix + k] = secret_value(docs, src["secretRef"]["name"], k)
    if pod.index is not None:
        env["JOB_COMPLETION_INDEX"] = str(pod.index)
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = expand(str(e["value"]), env)
            continue
        ref = e.get("valueFrom") or {}
        if "fieldRef" in ref:
            field = ref["fieldRef"]["fieldPath"]
            known = {"status.podIP": addresses.get(pod.name), "metadata.name": pod.name,
                     "metadata.namespace": NAMESPACE}
            if field not in known:
                raise SystemExit(f"pods: {pod.name}: fieldRef {field} is not one this harness provides")
            if known[field] is None:
                raise SystemExit(f"pods: {pod.name}: no address (--addresses)")
            env[e["name"]] = known[field]
        elif "configMapKeyRef" in ref:
            cm = find(docs, "ConfigMap", ref["configMapKeyRef"]["name"]) or {}
            env[e["name"]] = str((cm.get("data") or {})[ref["configMapKeyRef"]["key"]])
        elif "secretKeyRef" in ref:
            env[e["name"]] = secret_value(docs, ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
        else:
            raise SystemExit(f"pods: {pod.name}: env {e['name']} comes from {sorted(ref)}, which this harness lacks")
    return env


def port_number(container, port):
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    return None


def mounts(docs, pod):
    volumes = {v["name"]: v for v in pod.spec.get("volumes") or []}
    out = []
    for m in pod.container.get("volumeMounts") or []:
        if m.get("subPath"):
            raise SystemExit(f"pods: {pod.name}: subPath mounts are not emulated")
        v = volumes.get(m["name"])
        if v is None:
            raise SystemExit(f"pods: {pod.name}: mounts {m['name']}, which is no volume of the pod")
        if "secret" in v:
            name = v["secret"]["secretName"]
            if find(docs, "Secret", name) is None:
                raise SystemExit(f"pods: {pod.name}: no Secret {name} among the rendered objects")
            out.append((m["mountPath"], "secret", name, oct(int(v["secret"].get("defaultMode", 0o644)))))
        elif "persistentVolumeClaim" in v:
            claim = v["persistentVolumeClaim"]["claimName"]
            if find(docs, "PersistentVolumeClaim", claim) is None:
                raise SystemExit(f"pods: {pod.name}: no PersistentVolumeClaim {claim} among the rendered objects")
            out.append((m["mountPath"], "pvc", claim, "-"))
        elif "emptyDir" in v:
            out.append((m["mountPath"], "emptyDir", m["name"], "-"))
        else:
            raise SystemExit(f"pods: {pod.name}: volume {m['name']} is of a kind this harness lacks")
    return out


def hosts(docs, all_pods, addresses):
    lines = []
    for s in docs:
        if s.get("kind") != "Service" or s["spec"].get("clusterIP") != "None":
            continue
        for p in all_pods:
            if selects(s["spec"].get("selector"), p.labels) and p.name in addresses:
                lines.append(f"{addresses[p.name]} {s['metadata']['name']}")
                if p.workload["kind"] == "StatefulSet" and p.workload["spec"].get("serviceName") == s["metadata"]["name"]:
                    lines.append(f"{addresses[p.name]} {p.name}.{s['metadata']['name']}")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", action="append", default=[], help="IMAGE=DOCKERFILE")
    ap.add_argument("--addresses")
    ap.add_argument("files", nargs="+")
    a, rest = ap.parse_known_args()
    files = [f for f in a.files if os.path.isfile(f)]
    words = [f for f in a.files if not os.path.isfile(f)] + rest
    if not words:
        raise SystemExit("pods: no command (list, env, argv, mounts, secret, probe, hosts)")
    images = dict(i.split("=", 1) for i in a.image)
    addresses = {}
    if a.addresses:
        for line in open(a.addresses):
            if line.strip():
                n, ip = line.split()
                addresses[n] = ip
    docs = load(files)
    all_pods = pods(docs)
    command, args = words[0], words[1:]
    if command == "list":
        for p in all_pods:
            print(p.name, p.role, p.workload["metadata"]["name"], sep="\t")
        return
    if command == "hosts":
        print("\n".join(hosts(docs, all_pods, addresses)))
        return
    if command == "secret":
        print(secret_value(docs, args[0], args[1]), end="")
        return
    by_name = {p.name: p for p in all_pods}
    if not args or args[0] not in by_name:
        raise SystemExit(f"pods: no pst pod {args[0] if args else ''} (pods: {', '.join(by_name)})")
    pod = by_name[args[0]]
    if command == "env":
        for k, v in environment(docs, pod, images, addresses).items():
            print(f"{k}={v}")
    elif command == "argv":
        env = environment(docs, pod, images, addresses)
        print("\n".join(expand(str(x), env) for x in pod.args))
    elif command == "mounts":
        for m in mounts(docs, pod):
            print(*m, sep="\t")
    elif command == "probe":
        get = (pod.container.get("readinessProbe") or {}).get("httpGet")
        if not get:
            raise SystemExit(f"pods: {pod.name} has no httpGet readiness probe")
        print(port_number(pod.container, get["port"]), get.get("path", "/"), sep="\t")
    else:
        raise SystemExit(f"pods: unknown command {command}")


if __name__ == "__main__":
    main()
