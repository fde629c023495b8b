#!/usr/bin/env python3
"""Checks pst's rendered Kubernetes manifests without a cluster.

The input is what `kubectl kustomize` renders (with the storage
kustomization and the Secret that `kubectl create secret --dry-run=client -o
yaml` gives, so that references can be followed). Each rule is named in its
message:
  k8s-roles     one scheduler pod binding tcp://0.0.0.0:PORT; servers and
                workers reach tcp://SERVICE:PORT of a Service that selects it
                and has that port; cluster.servers equals the server pods,
                cluster.workers the worker pods, all started at once (an
                indexed Job with parallelism = completions)
  k8s-env       every pst container has the same job settings (the job id
                hashes them) and job file
  k8s-dns       the scheduler's Service and the servers' (serviceName) are
                headless and publish not-ready addresses: a pod is ready only
                after the rendezvous that needs the name
  k8s-order     the servers' StatefulSet starts its pods in parallel
  k8s-restart   the scheduler is a Job that never restarts; servers are a
                StatefulSet; workers a Job that restarts on failure
  k8s-limits    every pst container requests and limits CPU and memory
  k8s-gpu       a container that trains on cuda has an nvidia.com/gpu limit
                and the CUDA image, and one with a GPU trains on it
  k8s-probe     the readiness probe gets /healthz on the metrics port, and
                /metrics listens on every address (the kubelet probes the
                pod's)
  k8s-metrics   pods carry prometheus.io/scrape and /port annotations of the
                metrics port; a PodMonitor selects every pst pod by the
                port's name
  k8s-stop      terminationGracePeriodSeconds gives one step and a
                checkpoint time (at least 120 s)
  k8s-secret    security.key_file is a key of a Secret mounted read-only,
                with no access for others
  k8s-volumes   train.output is on one ReadWriteMany claim that every pst
                pod mounts
  k8s-network   a NetworkPolicy over the pst pods admits, from the job's
                pods, the scheduler's port and all of cluster.port_range
                (which must be set), and the metrics port from anywhere
  k8s-image     images name a tag, never :latest, of a known Dockerfile
  k8s-security  pods run as a numeric non-root user (the kubelet cannot
                check a named one) with an fsGroup for the claim, without
                privilege escalation
  k8s-labels    workload selectors match their pod templates; every Service
                selects pst pods
Exit 1 with one line per problem; 0 when clean.
  tests/kubernetes/lint.py --image pst:cpu=docker/Dockerfile ... RENDERED.yaml...
"""
import argparse
import os
import re
import sys

import pods as k8s

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docker"))
from lint import job_settings_of  # noqa: E402

MIN_GRACE_S = 120


def lint(docs, images):
    problems = []

    def bad(rule, msg):
        problems.append(f"[{rule}] {msg}")

    all_pods = k8s.pods(docs)
    if not all_pods:
        bad("k8s-roles", "no workload runs pst train --role")
        return problems
    # One pod of each workload speaks for it (a workload's pods share a template).
    first = {}
    for p in all_pods:
        first.setdefault(p.workload["metadata"]["name"], p)
    for p in first.values():
        image = p.container.get("image", "")
        if not re.search(r":[^/:]+$", image) or image.endswith(":latest"):
            bad("k8s-image", f"{p.workload['metadata']['name']}: image {image!r} names no tag, or :latest")
        if image not in images:
            bad("k8s-image", f"{p.workload['metadata']['name']}: image {image!r} is none of {sorted(images)}")
    if problems:
        return problems
    env = {p.name: k8s.environment(docs, p, images, {q.name: "POD_IP" for q in all_pods}) for p in first.values()}

    def setting(p, key, default=""):
        return env[first[p.workload["metadata"]["name"]].name].get(key, default)

    def workload(p):
        return p.workload["metadata"]["name"]

    # k8s-env
    def settings(p):
        return job_settings_of(env[p.name]), p.args[p.args.index("--config") + 1] if "--config" in p.args else None

    ref = sorted(first.values(), key=workload)[0]
    for p in sorted(first.values(), key=workload):
        if settings(p) != settings(ref):
            diff = sorted(set(settings(p)[0].items()) ^ set(settings(ref)[0].items()))
            bad("k8s-env", f"{workload(p)}'s job settings differ from {workload(ref)}'s: "
                           f"{diff or (settings(p)[1], settings(ref)[1])}")

    # k8s-roles and k8s-dns
    def scheduler_arg(p):
        return p.args[p.args.index("--scheduler") + 1] if "--scheduler" in p.args else ""

    scheds = [p for p in all_pods if p.role == "scheduler"]
    servers = [p for p in all_pods if p.role == "server"]
    workers = [p for p in all_pods if p.role == "worker"]
    services = [d for d in docs if d.get("kind") == "Service"]
    if len(scheds) != 1:
        bad("k8s-roles", f"{len(scheds)} scheduler pods; one is needed")
    else:
        sched = scheds[0]
        m = re.fullmatch(r"tcp://0\.0\.0\.0:(\d+)", scheduler_arg(sched))
        if not m:
            bad("k8s-roles", f"{workload(sched)} binds {scheduler_arg(sched)!r}; expected tcp://0.0.0.0:PORT")
        else:
            port = int(m.group(1))
            for p in first.values():
                if p.role == "scheduler":
                    continue
                m2 = re.fullmatch(r"tcp://([a-z0-9-]+)(\.[a-z0-9.-]+)?:(\d+)", scheduler_arg(p))
                svc = next((s for s in services if m2 and s["metadata"]["name"] == m2.group(1)), None)
                if svc is None or not k8s.selects(svc["spec"].get("selector"), sched.labels):
                    bad("k8s-roles", f"{workload(p)} reaches the scheduler at {scheduler_arg(p)!r}, "
                                     "which names no Service that selects the scheduler's pod")
                    continue
                ports = [k8s.port_number(sched.container, sp.get("targetPort", sp["port"]))
                         for sp in svc["spec"].get("ports") or [] if int(sp["port"]) == int(m2.group(3))]
                if port not in ports:
                    bad("k8s-roles", f"Service {svc['metadata']['name']} does not lead port {m2.group(3)} to the "
                                     f"scheduler's {port}")
                if svc["spec"].get("clusterIP") != "None" or svc["spec"].get("publishNotReadyAddresses") is not True:
                    bad("k8s-dns", f"Service {svc['metadata']['name']} must be headless (clusterIP: None) and "
                                   "publishNotReadyAddresses: true")
            if not any(k8s.port_number(sched.container, cp.get("name")) == port
                       for cp in sched.container.get("ports") or []):
                bad("k8s-roles", f"{workload(sched)} declares no containerPort {port}")
        if sched.workload["kind"] != "Job" or sched.spec.get("restartPolicy") != "Never" \
                or int(sched.workload["spec"].get("backoffLimit", 6)) != 0:
            bad("k8s-restart", f"{workload(sched)}: the scheduler must be a Job with restartPolicy Never and "
                               "backoffLimit 0 (a new scheduler cannot take over a running job)")
    for role, members, key in (("server", servers, "PST_CLUSTER_SERVERS"), ("worker", workers, "PST_CLUSTER_WORKERS")):
        for p in {workload(m): m for m in members}.values():
            if setting(p, key) != str(len(members)):
                bad("k8s-roles", f"{workload(p)}: {key}={setting(p, key)} but {len(members)} {role} pods")
    for p in {workload(w): w for w in workers}.values():
        spec = p.workload["spec"]
        if p.workload["kind"] != "Job" or p.spec.get("restartPolicy") != "OnFailure":
            bad("k8s-restart", f"{workload(p)}: workers must be a Job with restartPolicy OnFailure (a worker that "
                               "fails takes its place back)")
        if p.workload["kind"] == "Job" and (spec.get("completionMode") != "Indexed"
                                            or spec.get("parallelism") != spec.get("completions")):
            bad("k8s-roles", f"{workload(p)}: an indexed Job with parallelism = completions (every worker at once)")
    for p in {workload(s): s for s in servers}.values():
        spec = p.workload["spec"]
        if p.workload["kind"] != "StatefulSet":
            bad("k8s-restart", f"{workload(p)}: servers must be a StatefulSet (stable names, started again in place)")
            continue
        if spec.get("podManagementPolicy") != "Parallel":
            bad("k8s-order", f"{workload(p)}: podManagementPolicy {spec.get('podManagementPolicy', 'OrderedReady')}; "
                             "Parallel is needed (in order, a pod waits for the one before to be ready)")
        svc = next((s for s in services if s["metadata"]["name"] == spec.get("serviceName")), None)
        if svc is None or not k8s.selects(svc["spec"].get("selector"), p.labels) \
                or svc["spec"].get("clusterIP") != "None" or svc["spec"].get("publishNotReadyAddresses") is not True:
            bad("k8s-dns", f"{workload(p)}: serviceName {spec.get('serviceName')!r} must name a headless Service "
                           "that selects its pods and publishes not-ready addresses")

    # Per workload: limits, GPU, probe, metrics, stop, secret, volumes, security.
    claims = set()
    for p in first.values():
        name, c, e = workload(p), p.container, env[p.name]
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if not (res.get(kind) or {}).get(what):
                    bad("k8s-limits", f"{name} has no {what} in resources.{kind}")
        gpus = int((res.get("limits") or {}).get("nvidia.com/gpu", 0))
        cuda_image = "nvidia/cuda" in open(images[c["image"]]).read()
        if e.get("PST_TRAIN_DEVICE", "auto").startswith("cuda") and (gpus < 1 or not cuda_image):
            bad("k8s-gpu", f"{name} trains on {e['PST_TRAIN_DEVICE']} with {gpus} nvidia.com/gpu and image "
                           f"{c['image']}; it needs a GPU limit and the CUDA image")
        if gpus > 0 and (not cuda_image or e.get("PST_TRAIN_DEVICE", "auto") == "cpu"):
            bad("k8s-gpu", f"{name} has {gpus} GPU but image {c['image']} / train.device "
                           f"{e.get('PST_TRAIN_DEVICE', 'auto')}")
        metrics_port = int(e.get("PST_METRICS_PORT", "0") or 0)
        get = (c.get("readinessProbe") or {}).get("httpGet") or {}
        if get.get("path") != "/healthz" or k8s.port_number(c, get.get("port")) != metrics_port:
            bad("k8s-probe", f"{name}: the readiness probe must get /healthz on the metrics port {metrics_port} "
                             f"(it gets {get.get('path')} on {get.get('port')})")
        if e.get("PST_METRICS_BIND") != "0.0.0.0":
            bad("k8s-probe", f"{name}: metrics.bind {e.get('PST_METRICS_BIND')!r}; the kubelet probes the pod's "
                             "address, so 0.0.0.0")
        ann = (p.template.get("metadata") or {}).get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(metrics_port):
            bad("k8s-metrics", f"{name}: annotations prometheus.io/scrape \"true\" and prometheus.io/port "
                               f"\"{metrics_port}\" are needed")
        if k8s.port_number(c, "metrics") != metrics_port:
            bad("k8s-metrics", f"{name}: no containerPort named metrics = {metrics_port}")
        grace = int(p.spec.get("terminationGracePeriodSeconds", 30))
        if grace < MIN_GRACE_S:
            bad("k8s-stop", f"{name}: terminationGracePeriodSeconds {grace} < {MIN_GRACE_S}: a stop finishes a "
                            "step and writes a checkpoint before SIGKILL")
        volumes = {v["name"]: v for v in p.spec.get("volumes") or []}
        mounts = [(m, volumes.get(m["name"], {})) for m in c.get("volumeMounts") or []]
        if e.get("PST_SECURITY_MODE", "secret") != "none":
            key = e.get("PST_SECURITY_KEY_FILE", "")
            held = [(m, v) for m, v in mounts if "secret" in v and os.path.dirname(key) == m["mountPath"].rstrip("/")]
            if not held:
                bad("k8s-secret", f"{name}: security.key_file {key!r} is in no Secret's mount")
            for m, v in held:
                s = k8s.find(docs, "Secret", v["secret"]["secretName"])
                if s is None or os.path.basename(key) not in {**(s.get("data") or {}), **(s.get("stringData") or {})}:
                    bad("k8s-secret", f"{name}: Secret {v['secret']['secretName']} has no key "
                                      f"{os.path.basename(key)!r} (or is not among the rendered objects)")
                if not m.get("readOnly") or int(v["secret"].get("defaultMode", 0o644)) & 0o007:
                    bad("k8s-secret", f"{name}: the key's mount must be readOnly and its defaultMode give others "
                                      "nothing (e.g. 0440)")
        output = e.get("PST_TRAIN_OUTPUT", "")
        held = [v["persistentVolumeClaim"]["claimName"] for m, v in mounts if "persistentVolumeClaim" in v
                and output.startswith(m["mountPath"].rstrip("/") + "/")]
        if not held:
            bad("k8s-volumes", f"{name}: no PersistentVolumeClaim holds train.output {output!r}")
        claims.update(held)
        sc, csc = p.spec.get("securityContext") or {}, c.get("securityContext") or {}
        user = sc.get("runAsUser", csc.get("runAsUser"))
        if sc.get("runAsNonRoot", csc.get("runAsNonRoot")) is not True or not isinstance(user, int) or user == 0:
            bad("k8s-security", f"{name}: runAsNonRoot: true with a numeric runAsUser other than 0 is needed")
        if not isinstance(sc.get("fsGroup"), int):
            bad("k8s-security", f"{name}: no fsGroup (the claim must be writable by the pod's user)")
        if csc.get("allowPrivilegeEscalation") is not False:
            bad("k8s-security", f"{name}: allowPrivilegeEscalation: false is needed")
    if len(claims) > 1:
        bad("k8s-volumes", f"train.output is on several claims {sorted(claims)}; one shared claim is needed")
    for claim in claims:
        pvc = k8s.find(docs, "PersistentVolumeClaim", claim)
        if pvc is None or "ReadWriteMany" not in (pvc["spec"].get("accessModes") or []):
            bad("k8s-volumes", f"claim {claim} must be rendered and ReadWriteMany (pods on several nodes mount it)")

    # k8s-metrics: the PodMonitor.
    monitors = [d for d in docs if d.get("kind") == "PodMonitor"]
    covered = [m for m in monitors if all(k8s.selects((m["spec"].get("selector") or {}).get("matchLabels"), p.labels)
                                          for p in all_pods)]
    if not covered or not any(ep.get("port") == "metrics" for m in covered
                              for ep in m["spec"].get("podMetricsEndpoints") or []):
        bad("k8s-metrics", "no PodMonitor selects every pst pod with an endpoint on port \"metrics\"")

    # k8s-network
    ref_env = env[ref.name]
    sched_port = None
    if scheds:
        m = re.fullmatch(r"tcp://0\.0\.0\.0:(\d+)", scheduler_arg(scheds[0]))
        sched_port = int(m.group(1)) if m else None
    rng = re.fullmatch(r"(\d+)-(\d+)", ref_env.get("PST_CLUSTER_PORT_RANGE", ""))
    for pol in (d for d in docs if d.get("kind") == "NetworkPolicy"):
        sel = (pol["spec"].get("podSelector") or {}).get("matchLabels") or {}
        if not any(k8s.selects(sel, p.labels) for p in all_pods) and sel:
            continue
        from_job, from_all = [], []
        for rule in pol["spec"].get("ingress") or []:
            sources = rule.get("from")
            spans = [(int(x["port"]), int(x.get("endPort", x["port"]))) for x in rule.get("ports") or []
                     if x.get("protocol", "TCP") == "TCP"] or [(1, 65535)]
            if not sources:
                from_all += spans
                from_job += spans
            elif any(k8s.selects((s.get("podSelector") or {}).get("matchLabels"), p.labels)
                     for s in sources for p in all_pods):
                from_job += spans

        def admits(spans, lo, hi):
            return all(any(a <= port <= b for a, b in spans) for port in range(lo, hi + 1))

        name = pol["metadata"]["name"]
        if sched_port and not admits(from_job, sched_port, sched_port):
            bad("k8s-network", f"NetworkPolicy {name} does not admit the scheduler's port {sched_port} from the job")
        if not rng:
            bad("k8s-network", f"NetworkPolicy {name} over pst pods, but cluster.port_range is not set: the servers "
                               "listen on ephemeral ports it cannot admit")
        elif not admits(from_job, int(rng.group(1)), int(rng.group(2))):
            bad("k8s-network", f"NetworkPolicy {name} does not admit all of cluster.port_range "
                               f"{rng.group(0)} from the job")
        mp = int(ref_env.get("PST_METRICS_PORT", "0") or 0)
        if not admits(from_all, mp, mp):
            bad("k8s-network", f"NetworkPolicy {name} does not admit the metrics port {mp} from anywhere")

    # k8s-labels
    for d in docs:
        if d.get("kind") in ("StatefulSet", "Deployment") or (d.get("kind") == "Job" and "selector" in d["spec"]):
            sel = (d["spec"].get("selector") or {}).get("matchLabels") or {}
            labels = (d["spec"]["template"].get("metadata") or {}).get("labels") or {}
            if not k8s.selects(sel, labels):
                bad("k8s-labels", f"{d['kind']} {d['metadata']['name']}: selector {sel} does not match its pods")
        if d.get("kind") == "Service" and not any(k8s.selects(d["spec"].get("selector"), p.labels) for p in all_pods):
            bad("k8s-labels", f"Service {d['metadata']['name']} selects no pst pod")
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", action="append", default=[], help="IMAGE=DOCKERFILE")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    problems = lint(k8s.load(a.files), dict(i.split("=", 1) for i in a.image))
    for p in problems:
        print(p)
    if not problems:
        print(f"lint: {', '.join(os.path.basename(f) for f in a.files)}: clean")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
