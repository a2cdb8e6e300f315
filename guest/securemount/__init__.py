"""Secure mount: the pod's ephemeral block device as an encrypted, integrity-protected
image store.

``api.SecureMountService/SecureMount`` (Kata's Confidential Data Hub contract, as
Contrast serves it) formats the device named by ``deviceId`` afresh: LUKS2,
aes-xts-plain64 with hmac-sha256 integrity, 4096-byte sectors, no wipe, under a key
from the guest's RNG that only cryptsetup's stdin ever sees; then ext4, mounted as the
image puller's store. Modules: ``errors``, ``device`` (finding the device), ``command``
(the one run function), ``luks`` (cryptsetup), ``ext4`` (the file system), ``store``
(the steps in order, with their state) and ``service`` (ttrpc). See README.md.
"""
