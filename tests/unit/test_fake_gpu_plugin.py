"""The fake GPU device plugin against a stand-in kubelet speaking the device-plugin gRPC API."""

from __future__ import annotations

import tempfile
import threading
from concurrent import futures
from pathlib import Path

import fake_gpu_plugin as plugin
import grpc
import pytest

from tests.e2e.waiting import wait_for


class FakeKubelet:
    """The kubelet's Registration service on DIR/kubelet.sock, recording each registration."""

    def __init__(self, directory: Path):
        self.registrations: list = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler(
            "v1beta1.Registration",
            {
                "Register": grpc.unary_unary_rpc_method_handler(
                    self.register,
                    request_deserializer=plugin.M["RegisterRequest"].FromString,
                    response_serializer=plugin.M["Empty"].SerializeToString,
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port(f"unix://{directory / 'kubelet.sock'}")
        self.server.start()

    def register(self, request, context):
        self.registrations.append(request)
        return plugin.M["Empty"]()


@pytest.fixture
def plugin_dir():
    # unix socket paths are short: pytest's tmp_path can be too long for one
    with tempfile.TemporaryDirectory(prefix="dp-") as directory:
        yield Path(directory)


@pytest.fixture
def running_plugin(plugin_dir):
    kubelet = FakeKubelet(plugin_dir)
    done = threading.Event()
    thread = threading.Thread(
        target=plugin.serve, args=(plugin_dir, "nvidia.com/gpu", 8, "GPU-n0", done), daemon=True
    )
    thread.start()
    wait_for(lambda: kubelet.registrations, timeout=10, what="the plugin registering")
    yield kubelet
    done.set()
    thread.join(timeout=10)
    kubelet.server.stop(grace=None)


def call(plugin_dir: Path, method: str, request, response: str, stream: bool = False):
    socket = plugin_dir / plugin.endpoint_name("nvidia.com/gpu")
    channel = grpc.insecure_channel(f"unix://{socket}")
    kind = channel.unary_stream if stream else channel.unary_unary
    rpc = kind(
        f"/v1beta1.DevicePlugin/{method}",
        request_serializer=type(request).SerializeToString,
        response_deserializer=plugin.M[response].FromString,
    )
    return channel, rpc(request, timeout=10)


def test_registers_its_resource_and_endpoint_with_the_kubelet(running_plugin):
    (registration,) = running_plugin.registrations
    assert registration.version == "v1beta1"
    assert registration.resource_name == "nvidia.com/gpu"
    assert registration.endpoint == plugin.endpoint_name("nvidia.com/gpu")


def test_lists_eight_healthy_devices(running_plugin, plugin_dir):
    channel, stream = call(
        plugin_dir, "ListAndWatch", plugin.M["Empty"](), "ListAndWatchResponse", stream=True
    )
    first = next(iter(stream))
    channel.close()
    assert [d.ID for d in first.devices] == [f"GPU-n0-{i}" for i in range(8)]
    assert {d.health for d in first.devices} == {"Healthy"}


def test_allocate_tells_each_container_its_device_ids(running_plugin, plugin_dir):
    request = plugin.M["AllocateRequest"](
        container_requests=[
            plugin.M["ContainerAllocateRequest"](devices_ids=["GPU-n0-3", "GPU-n0-5"]),
            plugin.M["ContainerAllocateRequest"](devices_ids=["GPU-n0-0"]),
        ]
    )
    channel, answer = call(plugin_dir, "Allocate", request, "AllocateResponse")
    channel.close()
    envs = [dict(r.envs) for r in answer.container_responses]
    assert envs == [
        {"NVIDIA_VISIBLE_DEVICES": "GPU-n0-3,GPU-n0-5"},
        {"NVIDIA_VISIBLE_DEVICES": "GPU-n0-0"},
    ]


def test_registers_again_when_the_kubelet_restarts(plugin_dir):
    kubelet = FakeKubelet(plugin_dir)
    done = threading.Event()
    thread = threading.Thread(
        target=plugin.serve, args=(plugin_dir, "nvidia.com/gpu", 2, "GPU-n0", done), daemon=True
    )
    thread.start()
    try:
        wait_for(lambda: kubelet.registrations, timeout=10, what="the first registration")
        kubelet.server.stop(grace=None)
        (plugin_dir / "kubelet.sock").unlink(missing_ok=True)
        restarted = FakeKubelet(plugin_dir)
        wait_for(lambda: restarted.registrations, timeout=10, what="a registration after restart")
        restarted.server.stop(grace=None)
    finally:
        done.set()
        thread.join(timeout=10)
