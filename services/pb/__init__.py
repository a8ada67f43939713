"""Generated gRPC stubs of proto/rkdsc/v1 (scripts/gen_proto.py)."""
