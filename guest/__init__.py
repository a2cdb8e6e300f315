"""Everything that runs inside the pod-VM: initdata, guest agent, image puller, secure mount."""
