from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ImagePullRequest(_message.Message):
    __slots__ = ("image_url", "bundle_path")
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_PATH_FIELD_NUMBER: _ClassVar[int]
    image_url: str
    bundle_path: str
    def __init__(self, image_url: _Optional[str] = ..., bundle_path: _Optional[str] = ...) -> None: ...

class ImagePullResponse(_message.Message):
    __slots__ = ("manifest_digest",)
    MANIFEST_DIGEST_FIELD_NUMBER: _ClassVar[int]
    manifest_digest: str
    def __init__(self, manifest_digest: _Optional[str] = ...) -> None: ...
