"""A fake GPU device plugin for a real kubelet: advertises N "GPUs" and hands their IDs to pods.

    python fake_gpu_plugin.py --plugin-dir DIR [--resource nvidia.com/gpu] [--count 8] --prefix P

Speaks the kubelet's device-plugin gRPC API v1beta1: serves DevicePlugin on a socket in the
kubelet's device-plugins directory and registers it on the kubelet's `kubelet.sock` there. The
kubelet then reports the resource in the node's capacity, picks device IDs for each container
that requests some and calls Allocate, whose answer sets NVIDIA_VISIBLE_DEVICES to the IDs, as
NVIDIA's plugin does (so a container can tell which fake GPUs it got). A kubelet that restarts
recreates kubelet.sock and forgets its plugins: the plugin notices and registers again.

The messages are described here from the API's schema (field names and numbers) and built with
protobuf's descriptor API, so no generated code is needed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

API_VERSION = "v1beta1"
PACKAGE = "v1beta1"
ENV_VAR = "NVIDIA_VISIBLE_DEVICES"

_F = descriptor_pb2.FieldDescriptorProto
_STRING, _BOOL, _INT64, _INT32, _MESSAGE = (
    _F.TYPE_STRING,
    _F.TYPE_BOOL,
    _F.TYPE_INT64,
    _F.TYPE_INT32,
    _F.TYPE_MESSAGE,
)
_REPEATED = "repeated"

# message -> [(field, number, type, message type or None, "repeated" or "")]
SCHEMA: dict[str, list[tuple]] = {
    "Empty": [],
    "DevicePluginOptions": [
        ("pre_start_required", 1, _BOOL, None, ""),
        ("get_preferred_allocation_available", 2, _BOOL, None, ""),
    ],
    "RegisterRequest": [
        ("version", 1, _STRING, None, ""),
        ("endpoint", 2, _STRING, None, ""),
        ("resource_name", 3, _STRING, None, ""),
        ("options", 4, _MESSAGE, "DevicePluginOptions", ""),
    ],
    "NUMANode": [("ID", 1, _INT64, None, "")],
    "TopologyInfo": [("nodes", 1, _MESSAGE, "NUMANode", _REPEATED)],
    "Device": [
        ("ID", 1, _STRING, None, ""),
        ("health", 2, _STRING, None, ""),
        ("topology", 3, _MESSAGE, "TopologyInfo", ""),
    ],
    "ListAndWatchResponse": [("devices", 1, _MESSAGE, "Device", _REPEATED)],
    "ContainerAllocateRequest": [("devices_ids", 1, _STRING, None, _REPEATED)],
    "AllocateRequest": [("container_requests", 1, _MESSAGE, "ContainerAllocateRequest", _REPEATED)],
    "Mount": [
        ("container_path", 1, _STRING, None, ""),
        ("host_path", 2, _STRING, None, ""),
        ("read_only", 3, _BOOL, None, ""),
    ],
    "DeviceSpec": [
        ("container_path", 1, _STRING, None, ""),
        ("host_path", 2, _STRING, None, ""),
        ("permissions", 3, _STRING, None, ""),
    ],
    "CDIDevice": [("name", 1, _STRING, None, "")],
    "ContainerAllocateResponse": [
        ("envs", 1, _MESSAGE, "ContainerAllocateResponse.EnvsEntry", _REPEATED),
        ("mounts", 2, _MESSAGE, "Mount", _REPEATED),
        ("devices", 3, _MESSAGE, "DeviceSpec", _REPEATED),
        ("annotations", 4, _MESSAGE, "ContainerAllocateResponse.AnnotationsEntry", _REPEATED),
        ("cdi_devices", 5, _MESSAGE, "CDIDevice", _REPEATED),
    ],
    "AllocateResponse": [
        ("container_responses", 1, _MESSAGE, "ContainerAllocateResponse", _REPEATED)
    ],
    "PreStartContainerRequest": [("devices_ids", 1, _STRING, None, _REPEATED)],
    "PreStartContainerResponse": [],
    "ContainerPreferredAllocationRequest": [
        ("available_deviceIDs", 1, _STRING, None, _REPEATED),
        ("must_include_deviceIDs", 2, _STRING, None, _REPEATED),
        ("allocation_size", 3, _INT32, None, ""),
    ],
    "PreferredAllocationRequest": [
        ("container_requests", 1, _MESSAGE, "ContainerPreferredAllocationRequest", _REPEATED)
    ],
    "ContainerPreferredAllocationResponse": [("deviceIDs", 1, _STRING, None, _REPEATED)],
    "PreferredAllocationResponse": [
        ("container_responses", 1, _MESSAGE, "ContainerPreferredAllocationResponse", _REPEATED)
    ],
}
# map<string, string> fields are repeated entries of a nested key/value message.
MAP_ENTRIES = {"ContainerAllocateResponse": ("EnvsEntry", "AnnotationsEntry")}


def _field(message: descriptor_pb2.DescriptorProto, spec: tuple) -> None:
    name, number, kind, type_name, label = spec
    field = message.field.add(name=name, number=number, type=kind)
    field.label = _F.LABEL_REPEATED if label == _REPEATED else _F.LABEL_OPTIONAL
    if type_name:
        field.type_name = f".{PACKAGE}.{type_name}"


def _build_messages() -> dict[str, type]:
    file = descriptor_pb2.FileDescriptorProto(
        name="darwin_fake_deviceplugin.proto", package=PACKAGE, syntax="proto3"
    )
    for name, fields in SCHEMA.items():
        message = file.message_type.add(name=name)
        for entry in MAP_ENTRIES.get(name, ()):
            nested = message.nested_type.add(name=entry)
            nested.options.map_entry = True
            _field(nested, ("key", 1, _STRING, None, ""))
            _field(nested, ("value", 2, _STRING, None, ""))
        for spec in fields:
            _field(message, spec)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in SCHEMA
    }


M = _build_messages()


def _unary(handler, request: str, response: str) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        handler,
        request_deserializer=M[request].FromString,
        response_serializer=M[response].SerializeToString,
    )


class FakeGpus:
    """The DevicePlugin service: `count` healthy devices named PREFIX-0..count-1."""

    def __init__(self, prefix: str, count: int):
        self.ids = [f"{prefix}-{i}" for i in range(count)]
        self.stopped = threading.Event()

    def options(self, request, context):
        return M["DevicePluginOptions"]()

    def list_and_watch(self, request, context):
        devices = [M["Device"](ID=i, health="Healthy") for i in self.ids]
        yield M["ListAndWatchResponse"](devices=devices)
        # The kubelet keeps this stream open; the set of devices never changes.
        while not self.stopped.wait(1) and context.is_active():
            pass

    def allocate(self, request, context):
        return M["AllocateResponse"](
            container_responses=[allocation(r.devices_ids) for r in request.container_requests]
        )

    def preferred(self, request, context):
        return M["PreferredAllocationResponse"]()

    def pre_start(self, request, context):
        return M["PreStartContainerResponse"]()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            f"{PACKAGE}.DevicePlugin",
            {
                "GetDevicePluginOptions": _unary(self.options, "Empty", "DevicePluginOptions"),
                "ListAndWatch": grpc.unary_stream_rpc_method_handler(
                    self.list_and_watch,
                    request_deserializer=M["Empty"].FromString,
                    response_serializer=M["ListAndWatchResponse"].SerializeToString,
                ),
                "Allocate": _unary(self.allocate, "AllocateRequest", "AllocateResponse"),
                "GetPreferredAllocation": _unary(
                    self.preferred, "PreferredAllocationRequest", "PreferredAllocationResponse"
                ),
                "PreStartContainer": _unary(
                    self.pre_start, "PreStartContainerRequest", "PreStartContainerResponse"
                ),
            },
        )


def allocation(device_ids) -> object:
    """What a container that got `device_ids` sees: their IDs in NVIDIA_VISIBLE_DEVICES."""
    return M["ContainerAllocateResponse"](envs={ENV_VAR: ",".join(device_ids)})


def register(kubelet_socket: Path, endpoint: str, resource: str) -> None:
    with grpc.insecure_channel(f"unix://{kubelet_socket}") as channel:
        call = channel.unary_unary(
            f"/{PACKAGE}.Registration/Register",
            request_serializer=M["RegisterRequest"].SerializeToString,
            response_deserializer=M["Empty"].FromString,
        )
        call(
            M["RegisterRequest"](version=API_VERSION, endpoint=endpoint, resource_name=resource),
            timeout=10,
        )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def endpoint_name(resource: str) -> str:
    return f"darwin-fake-{resource.replace('/', '-')}.sock"


def serve(plugin_dir: Path, resource: str, count: int, prefix: str, done: threading.Event) -> None:
    """Serve and stay registered until `done`: (re)start the server and register whenever the
    kubelet's socket is new or ours has been removed (a kubelet restart does both)."""
    endpoint = endpoint_name(resource)
    kubelet_socket, own_socket = plugin_dir / "kubelet.sock", plugin_dir / endpoint
    server, plugin, registered_with = None, None, None
    while not done.is_set():
        kubelet = _identity(kubelet_socket)
        if kubelet and (kubelet != registered_with or not own_socket.exists()):
            if server:
                plugin.stopped.set()
                server.stop(grace=None)
            own_socket.unlink(missing_ok=True)
            plugin = FakeGpus(prefix, count)
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            server.add_generic_rpc_handlers((plugin.handler(),))
            server.add_insecure_port(f"unix://{own_socket}")
            server.start()
            try:
                register(kubelet_socket, endpoint, resource)
                registered_with = kubelet
                print(f"registered {count} x {resource} with {kubelet_socket}", flush=True)
            except grpc.RpcError as error:
                print(f"registration failed, retrying: {error}", flush=True)
        done.wait(1)
    if server:
        plugin.stopped.set()
        server.stop(grace=None)
    own_socket.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin-dir", type=Path, required=True)
    parser.add_argument("--resource", default="nvidia.com/gpu")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--prefix", default=f"GPU-{os.uname().nodename}")
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    serve(args.plugin_dir, args.resource, args.count, args.prefix, done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
