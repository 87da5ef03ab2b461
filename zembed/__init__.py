"""Generated gRPC code for the zembed.v1 contract (make protos); do not edit."""
