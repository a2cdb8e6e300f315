"""initdata inside the pod-VM: the document format shared with the host, the disk and
annotation encodings, TEE evidence parsers and sources, and the boot-time processor
that binds the pod's policy to the launch measurement.

Modules: :mod:`.document` (TOML, digest), :mod:`.codec` (bounded gzip, annotation),
:mod:`.disk` (the virtio-blk image), :mod:`.binding` (HOST_DATA/MRCONFIGID sizes),
:mod:`.snp` / :mod:`.tdx` (evidence parsers), :mod:`.tee` (sources), :mod:`.policy`
(deny-all), :mod:`.processor`, :mod:`.cli`.
"""
