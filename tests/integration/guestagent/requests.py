"""Kata-shaped requests as a host would send them, for the agent's integration tests."""

from __future__ import annotations

from api.kata import agent_pb2, oci_linux_pb2, oci_pb2, oci_process_pb2, oci_root_pb2, oci_user_pb2

ALLOW_ALL = "package agent_policy\n\ndefault allow_all := true\n" + "".join(
    f"default {name} := true\n"
    for name in (
        "CreateSandboxRequest", "DestroySandboxRequest", "CreateContainerRequest",
        "StartContainerRequest", "RemoveContainerRequest", "ExecProcessRequest",
        "SignalProcessRequest", "WaitProcessRequest", "ReadStreamRequest",
        "WriteStreamRequest", "CloseStdinRequest", "TtyWinResizeRequest",
        "StatsContainerRequest", "UpdateContainerRequest", "GetOOMEventRequest",
        "SetPolicyRequest", "GuestDetailsRequest", "PauseContainerRequest",
        "ResumeContainerRequest", "CopyFileRequest",
    )
)  # fmt: skip

DEFAULT_ENV = ["PATH=/bin:/usr/bin:/sbin:/usr/sbin", "HOME=/"]


def process(args: list[str], terminal: bool = False) -> oci_process_pb2.Process:
    return oci_process_pb2.Process(
        Args=args,
        Env=DEFAULT_ENV,
        Cwd="/",
        Terminal=terminal,
        User=oci_user_pb2.User(UID=0, GID=0),
        NoNewPrivileges=True,
        Capabilities=oci_process_pb2.LinuxCapabilities(
            Bounding=["CAP_KILL", "CAP_CHOWN"], Effective=["CAP_KILL", "CAP_CHOWN"],
            Permitted=["CAP_KILL", "CAP_CHOWN"],
        ),
    )  # fmt: skip


def spec(
    args: list[str],
    *,
    image: str = "",
    sandbox: bool = False,
    terminal: bool = False,
    memory_limit: int = 0,
) -> oci_pb2.Spec:
    """An OCI spec like containerd's CRI makes, host paths included (to be dropped)."""
    annotations = {
        "io.kubernetes.cri.container-type": "sandbox" if sandbox else "container",
        "io.kubernetes.cri.sandbox-id": "sandbox1",
    }
    if image:
        annotations["io.kubernetes.cri.image-name"] = image
    resources = oci_linux_pb2.LinuxResources()
    if memory_limit:
        resources.Memory.Limit = memory_limit
        resources.Memory.Swap = memory_limit
    return oci_pb2.Spec(
        Version="1.1.0",
        Process=process(args, terminal),
        Root=oci_root_pb2.Root(Path="/run/containerd/io.containerd.runtime.v2.task/k8s.io/x/rootfs"),
        Hostname="pod-host",
        Mounts=[
            oci_root_pb2.Mount(destination="/proc", source="proc", type="proc",
                               options=["nosuid", "noexec", "nodev"]),
            oci_root_pb2.Mount(destination="/dev", source="tmpfs", type="tmpfs",
                               options=["nosuid", "strictatime", "mode=755", "size=65536k"]),
            oci_root_pb2.Mount(destination="/dev/pts", source="devpts", type="devpts",
                               options=["nosuid", "noexec", "newinstance", "ptmxmode=0666",
                                        "mode=0620"]),
            oci_root_pb2.Mount(destination="/sys", source="sysfs", type="sysfs",
                               options=["nosuid", "noexec", "nodev", "ro"]),
            oci_root_pb2.Mount(destination="/etc/hosts", type="bind",
                               source="/var/lib/kubelet/pods/uid/etc-hosts",
                               options=["rbind", "rprivate", "rw"]),
            oci_root_pb2.Mount(destination="/etc/resolv.conf", type="bind",
                               source="/var/lib/containerd/sandboxes/x/resolv.conf",
                               options=["rbind", "rprivate", "ro"]),
            oci_root_pb2.Mount(destination="/dev/shm", type="bind",
                               source="/run/containerd/sandboxes/x/shm",
                               options=["rbind", "rprivate", "rw"]),
            # A volume (the service-account token) reaches the agent as a bind of the
            # copy the host made (agent.volumes): see test_copied_file_is_mounted.
        ],
        Annotations=annotations,
        Linux=oci_linux_pb2.Linux(
            Resources=resources,
            CgroupsPath="kubepods-besteffort-pod1.slice:cri-containerd:x",
            Namespaces=[
                oci_linux_pb2.LinuxNamespace(Type="pid"),
                oci_linux_pb2.LinuxNamespace(Type="ipc", Path="/proc/4242/ns/ipc"),
                oci_linux_pb2.LinuxNamespace(Type="uts", Path="/proc/4242/ns/uts"),
                oci_linux_pb2.LinuxNamespace(Type="mount"),
                oci_linux_pb2.LinuxNamespace(Type="network", Path="/var/run/netns/cni-x"),
            ],
            MaskedPaths=["/proc/kcore", "/proc/keys"],
            ReadonlyPaths=["/proc/sys", "/proc/sysrq-trigger"],
        ),
    )  # fmt: skip


def create_container(
    cid: str,
    args: list[str],
    image: str,
    *,
    terminal: bool = False,
    sandbox_pidns: bool = False,
    memory_limit: int = 0,
) -> agent_pb2.CreateContainerRequest:
    return agent_pb2.CreateContainerRequest(
        container_id=cid,
        exec_id=cid,
        OCI=spec(args, image=image, terminal=terminal, memory_limit=memory_limit),
        storages=[
            agent_pb2.Storage(
                driver="image_guest_pull",
                source=image,
                fstype="overlay",
                mount_point=f"/run/kata-containers/{cid}/rootfs",
            )
        ],
        sandbox_pidns=sandbox_pidns,
    )


def create_pause(cid: str) -> agent_pb2.CreateContainerRequest:
    return agent_pb2.CreateContainerRequest(
        container_id=cid,
        exec_id=cid,
        OCI=spec(["/pause"], image="registry.k8s.io/pause:3.9", sandbox=True),
        storages=[agent_pb2.Storage(driver="image_guest_pull", source="registry.k8s.io/pause:3.9")],
    )
