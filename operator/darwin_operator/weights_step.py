"""One reconcile's weights step (model.cache.staging): read the records and the nodes, plan
(weights.py), and create, adopt or delete staging and prune pods through cluster.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from darwin_operator import capacity, render, weights, weights_pods, writes
from darwin_operator.api import DarwinEndpointSpec
from darwin_operator.cluster import Cluster
from darwin_operator.logs import endpoint_log
from darwin_operator.observed import Observed, node_from_api, pod_from_api

log = logging.getLogger(__name__)


def eligible_nodes(spec: DarwinEndpointSpec, ref: render.EndpointRef, nodes: list[dict]) -> list:
    """Nodes a group pod could run on (GPUs aside): where PerNode weights are staged."""
    sample = pod_from_api(render.render_group(ref, spec, "staging", 0, gated=False)[0])
    resource = spec.placement.gpu_resource
    infos = [node_from_api(n) for n in nodes]
    return sorted(
        n.name for n in infos if capacity._exclusion(n, sample.placement, resource) is None
    )


class WeightsStep:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def prepare(
        self,
        ref: render.EndpointRef,
        spec: DarwinEndpointSpec,
        revision: str,
        observed: Observed,
        stored: Mapping[str, DarwinEndpointSpec],
        now: float,
    ) -> tuple[weights.WeightsPlan, dict[str, weights.Copy | None]] | None:
        copy = weights.copy_of(spec)
        if copy is None:
            return None
        cache = spec.model.cache
        assert cache is not None
        claim = cache.persistent_volume_claim
        pods, nodes, claim_found = await asyncio.gather(
            self.cluster.staging_pods(ref.namespace),
            self.cluster.list_nodes() if weights.per_node(spec) else _none(),
            self.cluster.claim_exists(ref.namespace, claim) if claim else _none(),
        )
        records = [r for p in pods if (r := weights.record_from_api(p)) is not None]
        targets = eligible_nodes(spec, ref, nodes or []) if weights.per_node(spec) else [""]
        blocked = None
        if claim_found is False:
            blocked = (
                weights.VOLUME_MISSING_REASON,
                f"PersistentVolumeClaim {claim} (spec.model.cache.persistentVolumeClaim) not "
                f"found in namespace {ref.namespace}; no weights are staged",
            )
        elif observed.secret_missing and spec.model.token_secret_ref is not None:
            blocked = (
                weights.SECRET_MISSING_REASON,
                f"Secret {spec.model.token_secret_ref.name} (spec.model.tokenSecretRef) not "
                "found; no weights are staged",
            )
        specs = {**stored, revision: spec}
        copies = {r: weights.copy_of(s) for r, s in specs.items()}
        in_use: frozenset[str] | None = frozenset({copy.key})
        for g in observed.groups:
            if g.revision not in specs:
                in_use = None
                break
            used = copies[g.revision]
            if used is not None and in_use is not None:
                in_use = in_use | {used.key}
        plan = weights.plan_weights(
            copy,
            targets,
            records,
            uid=ref.uid,
            now=now,
            download_timeout=spec.health.download_timeout_seconds,
            in_use=in_use,
            blocked=blocked,
        )
        await self.execute(ref, spec, plan)
        return plan, copies

    async def execute(
        self, ref: render.EndpointRef, spec: DarwinEndpointSpec, plan: weights.WeightsPlan
    ) -> None:
        creates: list[writes.PodWrite] = []
        deletes: list[writes.PodWrite] = []
        adopts = []
        for action in plan.actions:
            endpoint_log(log, ref.namespace, ref.name).info("weights: %s", action)
            match action:
                case weights.Stage() | weights.Prune():
                    body = weights_pods.pod(ref, spec, action)
                    creates.append(writes.CreatePod(body["metadata"]["name"], body))
                case weights.Remove(name=name):
                    deletes.append(writes.DeletePod(name))
                case weights.Adopt(name=name):
                    adopts.append(
                        self.cluster.add_pod_owner(ref.namespace, name, weights_pods.owner(ref))
                    )
        await asyncio.gather(
            self.cluster.write_pods(ref.namespace, creates),
            self.cluster.write_pods(ref.namespace, deletes),
            *adopts,
        )


async def _none() -> None:
    return None
