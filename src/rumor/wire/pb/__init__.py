"""Generated protobuf modules; run `make proto` to refresh."""
