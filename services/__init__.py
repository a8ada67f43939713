"""The rkdsc services: transmitter, channel emulator, receiver (gRPC) and control plane (REST)."""
