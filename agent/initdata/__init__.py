"""Host side of initdata: read a pod's document from its annotation, validate it, bind
its digest to the launch (SNP host-data, TDX mrconfigid, or the insecure command line)
and write the initdata disk the pod-VM reads at boot.

The document format itself lives in :mod:`guest.initdata.document`, shared with the
guest (the guest image ships ``guest/`` only).
"""

from agent.initdata.errors import InitdataError
from agent.initdata.launch import InitdataLaunch, prepare
from agent.initdata.pod import ANNOTATION, PodInitdata, from_annotation, from_annotations

__all__ = [
    "ANNOTATION",
    "InitdataError",
    "InitdataLaunch",
    "PodInitdata",
    "from_annotation",
    "from_annotations",
    "prepare",
]
