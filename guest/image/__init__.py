"""The guest image recipe: Debian root filesystem (erofs + dm-verity), initrd and kernel.

``python -m guest.image build`` builds it once per set of inputs; the artifacts and a
JSON manifest land in a cache directory keyed by a hash of those inputs.
"""
