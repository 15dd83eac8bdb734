"""certgraph domain model: certificates, events and lifecycle rules."""
