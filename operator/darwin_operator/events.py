"""The closed set of Kubernetes Event reasons the operator posts on a DarwinEndpoint."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    GROUP_CREATED = "GroupCreated"
    GROUP_ADMITTED = "GroupAdmitted"  # gates lifted: the whole group fits
    WAITING_FOR_CAPACITY = "WaitingForCapacity"
    GROUP_READY = "GroupReady"
    GROUP_DRAINING = "GroupDraining"
    GROUP_DELETED = "GroupDeleted"
    ROLLOUT_STARTED = "RolloutStarted"
    GROUP_REPLACED = "GroupReplaced"  # an old revision deleted, to be created new in place
    ROLLOUT_COMPLETE = "RolloutComplete"
    GROUP_RECREATING = "GroupRecreating"  # broken: deleted whole, created anew after a backoff
    SCHEDULING_TIMEOUT = "SchedulingTimeout"
    ENDPOINT_READY = "EndpointReady"
    # problems; each is also the reason of the Degraded condition
    INVALID_SPEC = "InvalidSpec"
    SECRET_NOT_FOUND = "SecretNotFound"
    NO_ELIGIBLE_NODES = "NoEligibleNodes"
    INSUFFICIENT_CAPACITY = "InsufficientCapacity"
    GROUP_BROKEN = "GroupBroken"
    MAX_GROUP_RESTARTS_EXCEEDED = "MaxGroupRestartsExceeded"  # the endpoint is Failed
    # the API server refused a write (Pod Security, a quota, an admission webhook); retried
    WRITE_REJECTED = "WriteRejected"
    # weights could not be staged (model.cache.staging): the cause is in the message
    STAGING_FAILED = "StagingFailed"
    RECONCILE_ERROR = "ReconcileError"
    # no model.cache: every pod downloads the whole model (the WeightsCached=False condition)
    EVERY_POD_DOWNLOADS = "EveryPodDownloads"


NORMAL = "Normal"
WARNING = "Warning"


@dataclass(frozen=True)
class EventNote:
    type: str  # NORMAL | WARNING
    reason: Reason
    message: str
