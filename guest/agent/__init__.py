"""The guest agent: the Kata agent protocol (grpc.AgentService, grpc.Health) over ttrpc.

For now it answers Health and GetGuestDetails; every other RPC answers UNIMPLEMENTED
(the ttrpc binding does that for methods the service object lacks).
"""

VERSION = "0.1.0"
