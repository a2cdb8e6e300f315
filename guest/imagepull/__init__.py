"""Guest image puller: digest-pinned OCI pulls, verified while streaming, unpacked safely
into a content-addressed layer store and assembled into an overlayfs rootfs.

Modules, one concern each: ``reference`` (parsing), ``digest`` (verification while
streaming), ``manifest`` (media types, index resolution), ``config`` (per-registry
settings), ``auth`` and ``registry`` (the distribution client), ``safefs`` and ``unpack``
(tar extraction without escapes), ``store`` (the content-addressed store), ``overlay``
(the rootfs mount), ``puller`` (the orchestration), ``service`` (ttrpc) and ``cli``.
"""
